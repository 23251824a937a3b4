"""Serving the app on one address: ``config.host`` and ``config.port`` only (no share link, no server-side
rendering process on another port, no usage statistics)."""
from __future__ import annotations

import os

from vos.app.config import AppConfig
from vos.app.models import ModelCache
from vos.errors import VosError


def serve(config: AppConfig) -> None:
    """Build the page and serve it until interrupted (a port in use is a :class:`VosError`); ``config`` checked
    beforehand (:meth:`AppConfig.check`)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from vos.app.layout import CSS, build, theme

    page = build(config, ModelCache())
    page.queue(default_concurrency_limit=None)
    config.out.mkdir(parents=True, exist_ok=True)
    try:
        page.launch(server_name=config.host, server_port=config.port, share=False, ssr_mode=False,
                    mcp_server=False, inbrowser=False, allowed_paths=[str(config.out.resolve())], theme=theme(),
                    css=CSS, footer_links=[])
    except OSError as err:
        raise VosError(f"cannot listen on {config.host}:{config.port} ({err}): choose another --port or --host")
