"""The page's events: each takes the session (``gr.State``) and the page's inputs, calls the library through
:class:`~vos.app.session.Session` and :mod:`~vos.app.runner`, and returns what the page shows. A user's mistake (a
:class:`~vos.errors.VosError`) becomes its one-line message in the page; anything else is logged on the server and
named in the page, never shown as a traceback."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import gradio as gr

from vos.app.config import AppConfig
from vos.app.models import ModelCache
from vos.app.render import (first_frame_view, frame_point, message, object_choices, object_list, progress,
                            states_line, track_view)
from vos.app.runner import Find, RunJob, command_line, downloads, new_run, resumed, shown
from vos.app.session import ModelSource, Objects, Session, Source, open_source
from vos.errors import InputError, VosError
from vos.runs import ObjectHistory, TrackRun
from vos.trackers.options import DEFAULT_DETECT_THRESHOLD

log = logging.getLogger(__name__)
#: Seconds between two looks at a run's progress when no frame arrives (a Stop shows at least this fast).
POLL = 0.5
_MODES = {"positive": 1, "negative": 0}


def _describe(source: Source) -> str:
    height, width = source.size
    length = "live" if source.live else f"{source.frames} frames" if source.frames else "length unknown"
    return f"{source.name}: {width}×{height}, {length}"


def _frames(text: Optional[str]) -> Optional[int]:
    """The "frames to track" box: empty = all."""
    if not (text or "").strip():
        return None
    try:
        frames = int(text.strip())
    except ValueError:
        frames = 0
    if frames < 1:
        raise InputError(f"frames to track: {text.strip()!r} is not a whole number ≥ 1 (frame 0 included; leave "
                         f"it empty for all)")
    return frames


def _failure(err: Exception) -> str:
    if isinstance(err, VosError):
        return str(err)
    log.error("unexpected error", exc_info=err)
    return f"internal error ({type(err).__name__}: {err}); the server log has the details"


class Handlers:
    """The callbacks of one app: ``config`` (server options) and ``models`` (shared by every session); the runs in
    progress by Gradio session, so that closing a page stops its run."""

    def __init__(self, config: AppConfig, models: ModelCache):
        self.config, self.models = config, models
        self._runs: Dict[str, RunJob] = {}
        self._lock = threading.Lock()
        self.first, self.reference = CanvasEvents(self, "first"), CanvasEvents(self, "reference")

    # -- helpers ----------------------------------------------------------------------------------------------
    def _model(self, name: str) -> ModelSource:
        options = self.config.model_for(name)
        return lambda: (options, self.models.get(options))

    # -- the source -------------------------------------------------------------------------------------------
    def _open(self, session: Session, video: str, name: Optional[str] = None) -> str:
        session.open(open_source(video, name))
        return f"{_describe(session.source)} · loading the model and encoding the first frame…"

    def open_demo(self, session: Session) -> tuple:
        def action() -> str:
            if not self.config.demo.is_file():
                raise InputError(f"the demo video {self.config.demo} is not here (it ships with the source "
                                 f"repository as demo/apple.mp4)")
            return self._open(session, str(self.config.demo), self.config.demo.name)
        return self.first._edit(session, action)

    def open_upload(self, session: Session, upload: Optional[str]) -> tuple:
        def action() -> str:
            if upload is None:
                raise InputError("no file was uploaded")
            path = Path(upload)
            return self._open(session, str(session.keep_upload(path, self.config.out)), path.name)
        return self.first._edit(session, action) + (None,)       # the upload box is emptied for the next file

    def open_path(self, session: Session, text: str) -> tuple:
        def action() -> str:
            if not text.strip():
                raise InputError("type a video path, a frame folder, a stream URL or camera:N first")
            return self._open(session, text.strip())
        return self.first._edit(session, action)

    def prepare(self, session: Session, model_name: str) -> tuple:
        """After a source opens: load the model and encode the first frame, so that the first click is fast."""
        def action() -> str:
            source = session.require_source()
            options, model = self._model(model_name)()
            session.first.features(options, model)
            live = " (a live source: tracking starts on the frame received then)" if source.live else ""
            return f"{_describe(source)}{live} · click on an object, or upload its mask"
        if session.source is None:
            return (gr.skip(),) * 4
        return self.first._edit(session, action)

    def change_model(self, session: Session, model_name: str) -> tuple:
        """Another model: its default method, and the masks of the clicks so far under it (first frame, then the
        reference photo)."""
        def action() -> str:
            model = self._model(model_name)
            canvases = [c for c in (session.first, session.reference) if c is not None]
            for canvas in canvases:
                canvas.features(*model())
                canvas.refresh(model)
            return f"model {model_name}" + (" · masks recomputed" if any(c.objects.items for c in canvases) else "")
        edit = self.first._edit(session, action)
        return (gr.Dropdown(value=self.config.default_method(model_name)),) + edit + self.reference.view(session)[:3]

    def open_reference(self, session: Session, upload: Optional[str], model_name: str) -> tuple:
        """A reference photo of objects to find: shown, encoded, ready for clicks or a mask."""
        def action() -> str:
            if upload is None:
                raise InputError("no file was uploaded")
            path = Path(upload)
            session.open_reference(path, path.name, self.config.out)
            session.reference.features(*self._model(model_name)())
            height, width = session.reference.size
            return (f"reference photo {path.name}: {width}×{height} · click on the objects to find, or upload "
                    f"their mask")
        return self.reference._edit(session, action) + (None,)

    # -- tracking ---------------------------------------------------------------------------------------------
    def track(self, session: Session, model_name: str, method: str, max_frames: Optional[str], redetect: bool,
              threshold: Optional[float], request: gr.Request) -> Iterator[tuple]:
        """Track: (preview, progress, message, downloads, command line) as each frame completes."""
        def run() -> TrackRun:
            find = Find(bool(redetect), DEFAULT_DETECT_THRESHOLD if threshold is None else float(threshold))
            return new_run(session, self.config.out, self.config.model_for(model_name), method, _frames(max_frames),
                           find)
        yield from self._follow(session, request, run)

    def resume(self, session: Session, max_frames: Optional[str], request: gr.Request) -> Iterator[tuple]:
        """Continue the session's last run after its last complete frame."""
        def run() -> TrackRun:
            if session.job is None:
                raise InputError("no run to continue yet: press Track")
            return resumed(session.job.run, _frames(max_frames))
        yield from self._follow(session, request, run)

    def _follow(self, session: Session, request: gr.Request, make_run: Callable[[], TrackRun]) -> Iterator[tuple]:
        skip = gr.skip()
        try:
            job = self._start(session, make_run)
        except Exception as err:
            yield skip, skip, message(_failure(err), error=True), skip, skip
            return
        run = job.run
        with self._lock:
            self._runs[request.session_hash] = job
        try:
            yield (None, progress(0, run.max_frames, "loading the model, first frame…"),
                   message(f"tracking into {shown(run.out)}"), [], "")
            seen, ended = 0, False
            while not ended:
                ended = job.done                 # read first: a frame reported before the end is still shown
                before = seen
                seen, event = job.wait(seen, POLL)
                if seen > before:
                    yield (track_view(event), progress(seen, event.total, states_line(event), event.seconds), skip,
                           skip, skip)
            yield self._finished(job)
        finally:
            if not job.done:                # the generator was closed: the page went away or was cancelled
                job.stop.request("the page was closed")
            with self._lock:
                if self._runs.get(request.session_hash) is job:
                    del self._runs[request.session_hash]

    def _start(self, session: Session, make_run: Callable[[], TrackRun]) -> RunJob:
        with session.busy:
            if session.job is not None and not session.job.done:
                raise InputError("a run is in progress: wait for it or press Stop")
            run = make_run()
            session.job = RunJob(run, lambda: self.models.get(run.model), known=session.first.known(run.model))
            return session.job

    @staticmethod
    def _finished(job: RunJob) -> tuple:
        """The last frame is on the page already: the message, the downloads and the command line."""
        run, summary, preview = job.run, job.summary, gr.skip()
        files = [str(p) for p in downloads(run)]
        command = command_line(run) if files and not run.is_live else ""
        if summary is None:
            return preview, progress(job.frames, None, "failed"), message(_failure(job.error), True), files, command
        how = "" if summary.complete else f" ({summary.stopped}; Resume or the command below continues)"
        live = "" if summary.live is None else f"; {summary.live.line()}"
        found = ObjectHistory.line_of(summary.objects)
        text = (f"{summary.written} frame(s) written, {summary.frames} complete in {shown(run.out)}{how}{live}"
                + (f" · {found}" if found else ""))
        return preview, progress(summary.frames, summary.frames, summary.stopped), message(text), files, command

    def stop(self, session: Session) -> str:
        if session.job is None or session.job.done:
            return message("no run in progress")
        session.job.stop.request("stopped in the page")
        return message("stopping after the frame in progress…")

    def unload(self, request: gr.Request) -> None:
        """The page was closed: stop its run (everything written so far is kept)."""
        with self._lock:
            job = self._runs.get(request.session_hash)
        if job is not None:
            job.stop.request("the page was closed")


class CanvasEvents:
    """The events of one image of the page that objects are put on: ``which`` = ``"first"`` (the first frame: the
    objects to track from there) or ``"reference"`` (a reference photo: the objects to find)."""

    def __init__(self, handlers: Handlers, which: str):
        self.h, self.which = handlers, which

    def view(self, session: Session, text: str = "", error: bool = False) -> tuple:
        """(image, object list, object selector, message)."""
        canvas = session.first if self.which == "first" else session.reference
        empty = "click on the first frame" if self.which == "first" else "click on the reference photo"
        if canvas is None:
            return None, object_list(Objects(), empty), gr.Dropdown(choices=[("new object", "new")], value="new"), \
                message(text, error)
        image = first_frame_view(canvas.image, canvas.labels, canvas.objects, canvas.corner)
        choices, value = object_choices(canvas.objects)
        return (image, object_list(canvas.objects, empty), gr.Dropdown(choices=choices, value=value),
                message(text, error))

    def _edit(self, session: Session, action: Callable[[], str]) -> tuple:
        """Run an edit; its message, or its error's, under the updated image."""
        with session.busy:
            try:
                return self.view(session, action())
            except Exception as err:
                return self.view(session, _failure(err), error=True)

    def click(self, session: Session, mode: str, model_name: str, evt: gr.SelectData) -> tuple:
        """A click on the picture (``evt.index`` = ``[x, y]`` pixels of it, border included)."""
        def action() -> str:
            canvas = session.canvas(self.which)
            if evt.index is None:
                raise InputError(f"the click is outside the {canvas.what}: click on the picture")
            x, y = frame_point(evt.index, canvas.size)
            if mode == "box":
                done = canvas.add_corner(x, y, self.h._model(model_name))
                return (f"box of object {canvas.objects.current}" if done
                        else f"first corner at ({x:g}, {y:g}): click the opposite corner")
            canvas.add_point(x, y, _MODES[mode], self.h._model(model_name))
            return f"object {canvas.objects.current}: {canvas.objects.get(canvas.objects.current).describe()}"
        return self._edit(session, action)

    def choose(self, session: Session, value: Optional[str]) -> tuple:
        def action() -> str:
            session.canvas(self.which).choose(None if value in (None, "new") else int(value))
            return ""
        return self._edit(session, action)

    def new_object(self, session: Session) -> tuple:
        def action() -> str:
            session.canvas(self.which).choose(None)
            return "the next click starts a new object"
        return self._edit(session, action)

    def remove(self, session: Session, value: Optional[str], model_name: str) -> tuple:
        def action() -> str:
            if value in (None, "new"):
                raise InputError("choose the object to remove in the object list first")
            session.canvas(self.which).remove(int(value), self.h._model(model_name))
            return f"object {value} removed"
        return self._edit(session, action)

    def undo(self, session: Session, model_name: str) -> tuple:
        def action() -> str:
            session.canvas(self.which).undo(self.h._model(model_name))
            return "undone"
        return self._edit(session, action)

    def upload_mask(self, session: Session, upload: Optional[str], model_name: str) -> tuple:
        def action() -> str:
            if upload is None:
                return ""
            ids = session.canvas(self.which).add_mask(Path(upload), Path(upload).name, self.h._model(model_name))
            return f"{Path(upload).name}: object(s) {', '.join(map(str, ids))} added"
        return self._edit(session, action) + (None,)
