"""The browser app (``vos app``): a thin Gradio layer over the library.

One module per job: :mod:`~vos.app.config` (the server's options and the page's choices), :mod:`~vos.app.models`
(one model per setting, shared read-only by every session), :mod:`~vos.app.session` (one browser session's state:
source, objects, undo), :mod:`~vos.app.runner` (a Track press: :func:`vos.runs.track` in a worker thread),
:mod:`~vos.app.render` (images and HTML of the page), :mod:`~vos.app.handlers` (the page's events),
:mod:`~vos.app.layout` (the Gradio page) and :mod:`~vos.app.server` (listening on one host and port). Gradio is
imported only by the last three.
"""
from vos.app.config import AppConfig

__all__ = ["AppConfig"]
