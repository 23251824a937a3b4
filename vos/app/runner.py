"""A Track press: the run's options from the session (:class:`~vos.runs.TrackRun`, exactly what ``vos track``
builds), :func:`vos.runs.track` in a worker thread whose newest frame the page polls, a Stop request, and the files
to download.

Each run of a session is ``<session folder>/run-N/`` (the run folder: palette PNGs, ``vos_run.json``,
``vos_states.jsonl``, ``vos_state.pt``) with ``run-N.mp4`` (overlay), ``run-N.jsonl`` (RLE), ``run-N-masks.zip``
(the PNGs) and, when the first frame has uploaded masks, ``run-N-first-frame.png`` beside it; with a reference
photo, ``run-N-reference-mask.png`` (its objects) and the photo in the session's ``uploads/``.
"""
from __future__ import annotations

import logging
import shlex
import threading
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch.nn as nn

from vos.app.session import Session
from vos.errors import InputError, VosError
from vos.io import save_palette_png
from vos.runs import RUN_FILE, STATES_FILE, FrameEvent, RunSummary, StopControl, TrackRun, completed_frames, track
from vos.runs.options import ModelOptions, ReferencePhoto
from vos.trackers.options import DEFAULT_DETECT_THRESHOLD, TrackerOptions

log = logging.getLogger(__name__)


def _next_run_name(folder: Path) -> str:
    n = 1
    while any(folder.glob(f"run-{n}*")):
        n += 1
    return f"run-{n}"


@dataclass(frozen=True)
class Find:
    """The page's options for objects with references: ``redetect`` (the first frame's objects become references
    too) and the ``detect_threshold``."""

    redetect: bool = False
    detect_threshold: float = DEFAULT_DETECT_THRESHOLD


def new_run(session: Session, out: Path, model: ModelOptions, method: str, max_frames: Optional[int],
            find: Find = Find()) -> TrackRun:
    """The run of the session's source and objects: on the first frame, the prompts (as ``--point`` / ``--box``
    would give them) when every object comes from clicks, else the label map shown, saved as a palette PNG; on the
    reference photo, its label map saved as a palette PNG beside the photo (``--ref-image`` / ``--ref-mask``)."""
    source = session.require_source()
    reference = session.reference if session.reference is not None and session.reference.labels is not None else None
    first = session.first
    if first.labels is None and reference is None:
        raise InputError("no object yet: click on the first frame (or upload a mask), or on a reference photo, "
                         "before tracking")
    folder = session.session_folder(out)
    name = _next_run_name(folder)
    prompts = tuple(o.prompt for o in first.objects.items)
    mask = None
    if any(p is None for p in prompts):
        mask = folder / f"{name}-first-frame.png"
        save_palette_png(mask, first.labels)
        prompts = ()
    references = ()
    if reference is not None:
        ref_mask = folder / f"{name}-reference-mask.png"
        save_palette_png(ref_mask, reference.labels)
        references = (ReferencePhoto(str(session.reference_file), str(ref_mask)),)
    tracker = TrackerOptions(method=method, detect_threshold=find.detect_threshold)
    return TrackRun(video=source.video, mask=None if mask is None else str(mask), prompts=prompts,
                    out=folder / name, overlay=folder / f"{name}.mp4", rle=folder / f"{name}.jsonl",
                    max_frames=max_frames, tracker=tracker, model=model, references=references,
                    redetect=find.redetect and first.labels is not None)


def resumed(run: TrackRun, max_frames: Optional[int]) -> TrackRun:
    """The same run continued after its last complete frame."""
    if run.is_live:
        raise InputError(f"{run.video} is a live source: a stream cannot be rewound, press Track for a new run")
    return replace(run, resume=True, overwrite=False, max_frames=max_frames)


class RunJob:
    """:func:`vos.runs.track` of ``run`` in a worker thread; :meth:`wait` hands the page the newest frame,
    :attr:`stop` ends the run after the frame in progress (everything written so far is kept). ``known``: the first
    frame and its features, encoded when the source opened (not encoded again)."""

    def __init__(self, run: TrackRun, load_model: Callable[[], nn.Module], known=None):
        self.run, self.known = run, known
        self.stop = StopControl()
        self.summary: Optional[RunSummary] = None
        self.error: Optional[BaseException] = None
        self.frames = 0                      # frames reported so far
        self.latest: Optional[FrameEvent] = None
        self.done = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._work, args=(load_model,), daemon=True,
                                        name=f"vos-app-{run.out.parent.name}-{run.out.name}")
        self._thread.start()

    def _work(self, load_model: Callable[[], nn.Module]) -> None:
        try:
            self.summary = track(self.run, model=load_model(), on_frame=self._on_frame, stop=self.stop,
                                 known=self.known)
        except BaseException as err:     # reported in the page; a bug also in the server log
            if not isinstance(err, VosError):
                log.exception("run %s failed", self.run.out)
            self.error = err
        finally:
            with self._changed:
                self.done = True
                self._changed.notify_all()

    def _on_frame(self, event: FrameEvent) -> None:
        with self._changed:
            self.latest, self.frames = event, self.frames + 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> Tuple[int, Optional[FrameEvent]]:
        """Block until a frame after the ``seen``-th is reported, the run ends, or ``timeout`` seconds pass;
        returns ``(frames reported, newest frame)``."""
        with self._changed:
            self._changed.wait_for(lambda: self.frames > seen or self.done, timeout)
            return self.frames, self.latest

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)


def downloads(run: TrackRun) -> List[Path]:
    """The files of a run that wrote frames: the PNGs as a zip, the overlay, the RLE lines, the settings."""
    if completed_frames(run.out) == 0:
        return []
    archive = run.out.parent / f"{run.out.name}-masks.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for png in sorted(run.out.glob("[0-9]*.png")):
            zf.write(png, f"{run.out.name}/{png.name}")
    files = [archive, run.overlay, run.rle, run.out / RUN_FILE, run.out / STATES_FILE]
    return [p for p in files if p is not None and p.is_file()]


def shown(path) -> str:
    """A path as the page shows it: relative to the app's working folder when it lies under it (so that the page
    and its command lines name no machine folders; they run from that folder), else as it is. Stream URLs and
    ``camera:N`` pass through."""
    text = str(path)
    if "://" in text or text.startswith("camera:") or text == "-":
        return text
    try:
        return str(Path(text).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return text


def command_line(run: TrackRun) -> str:
    """The ``vos track`` command that continues ``run`` (``--resume``) from the app's working folder: the same run
    folder and settings (:func:`vos.cli.track.track_arguments`)."""
    from vos.cli.track import track_arguments

    args = track_arguments(replace(run, resume=False, overwrite=False), lambda p: shown(Path(p).expanduser()))
    return shlex.join(["vos", "track", *args, "--resume"])
