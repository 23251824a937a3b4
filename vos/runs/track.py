"""Track one source into one run folder: the function every entry point calls (command line, app, batch runner).

:func:`track` checks everything that can fail before it writes anything (options, the source, the mask, the
reference photos, the output folder and files, the model and its checkpoint), then writes each frame as it is
computed: the overlay, the RLE line, the states line, the palette PNG, whose presence marks the frame complete, and
the tracker state. An interrupted run keeps every complete frame; ``resume`` continues after the last one with
outputs identical to an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from vos.errors import MaskError, OutputError, StreamError, VideoError, VosError
from vos.io import (ObjectMaskWriter, OverlayWriter, PaletteWriter, RleWriter, StatesWriter, load_label_map, read_rgb,
                    read_video, validate_first_mask)
from vos.io.atomic import atomic_write
from vos.runs.folder import RunFolder, check_output_file
from vos.runs.options import ObjectEntry, ReferencePhoto, TrackRun
from vos.trackers import FrameResult, Tracker
from vos.trackers.result import ObjectStatus

STATE_FILE = "vos_state.pt"
#: Folder of a run's per-object masks (``TrackRun.object_pngs``).
OBJECTS_DIR = "objects"
#: One line per frame: every object's state, detection score and whether it was found there.
STATES_FILE = "vos_states.jsonl"
#: Written when a run reached the end of its source (or ``max_frames``): batch runs skip such folders.
COMPLETE_FILE = "vos_complete.json"


@dataclass
class FrameEvent:
    """Progress of a run, after each frame: ``index`` (0-based), ``total`` (frames the run will have; None when
    unknown), ``frame`` (RGB ``uint8 H×W×3``), ``label_map`` (``uint8 H×W``), ``result`` (None for a frame a resumed
    run already had), ``seconds`` (wall time of this frame)."""

    index: int
    total: Optional[int]
    frame: np.ndarray
    label_map: np.ndarray
    result: Optional[FrameResult]
    seconds: float


ProgressFn = Callable[[FrameEvent], None]


class StopControl:
    """A request to stop a run between frames (a Stop button, Ctrl-C, SIGTERM). The run finishes the frame it is
    writing, closes every output and returns; :attr:`writing` tells a signal handler whether an interrupt may be
    raised now (while reading or computing a frame) or must wait (while its outputs are written)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.writing = False

    def request(self, reason: str = "stopped") -> None:
        self.reason = self.reason or reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    @contextlib.contextmanager
    def write_section(self) -> Iterator[None]:
        self.writing = True
        try:
            yield
        finally:
            self.writing = False


@dataclass
class LiveRunStats:
    """A live run: frames ``received`` from the source, ``processed`` (tracked and written), ``dropped`` (skipped in
    realtime mode), and the end-to-end latency (seconds from a frame's arrival to its outputs written): median and
    maximum (None when no frame was written)."""

    received: int
    processed: int
    dropped: int
    latency_median: Optional[float]
    latency_max: Optional[float]

    def line(self) -> str:
        latency = ("" if self.latency_median is None else
                   f", latency median {1000 * self.latency_median:.0f} ms, max {1000 * self.latency_max:.0f} ms")
        return f"{self.received} frames received, {self.processed} processed, {self.dropped} dropped{latency}"


class ObjectHistory:
    """When each object was found and lost, from the frames' states: ``events[id]`` is a list of ``("found", frame)``
    (a detection started tracking on that frame) and ``("lost", frame)`` (the first frame it was searched for again
    after being tracked)."""

    def __init__(self) -> None:
        self.events: Dict[int, List[Tuple[str, int]]] = {}
        self._tracking: Dict[int, bool] = {}

    def add(self, index: int, states: Dict[int, dict]) -> None:
        """Frame ``index``'s ``{id: {"state", "score", "found"}}`` (the lines of ``vos_states.jsonl``)."""
        for obj_id, status in states.items():
            was_tracking, events = self._tracking.get(obj_id, False), self.events.setdefault(obj_id, [])
            if was_tracking and (status["found"] or status["state"] != "tracking"):
                events.append(("lost", index))     # lost after the previous frame (and maybe found again at once)
            if status["found"]:
                events.append(("found", index))
            self._tracking[obj_id] = status["state"] == "tracking"
            if not events:
                del self.events[obj_id]

    def to_json(self) -> Dict[str, List[Dict[str, int]]]:
        return {str(i): [{kind: frame} for kind, frame in events] for i, events in sorted(self.events.items())}

    @staticmethod
    def line_of(events_by_id: Dict[int, List[Tuple[str, int]]]) -> str:
        """``object 1: found on frame 12, lost on 40, found again on 55; …`` (empty without events)."""
        parts = []
        for obj_id, events in sorted(events_by_id.items()):
            words, seen = [], set()
            for kind, frame in events:
                words.append(f"{kind}{' again' if kind in seen else ''} on {'frame ' if not words else ''}{frame}")
                seen.add(kind)
            parts.append(f"object {obj_id}: {', '.join(words)}")
        return "; ".join(parts)


@dataclass
class RunSummary:
    """What a run did: ``frames`` complete in ``out`` (PNGs), ``written`` by this call, ``resumed_from`` (frames that
    were already there), ``stopped`` (``"end"``, ``"max_frames"`` or the stop reason), ``outputs`` (the files and
    folder written), ``seconds`` (wall time), ``objects`` (when each object was found and lost: ``{id: [("found",
    frame) | ("lost", frame), …]}``)."""

    out: Path
    frames: int
    written: int
    resumed_from: int
    stopped: str
    seconds: float
    outputs: List[Path] = field(default_factory=list)
    live: Optional[LiveRunStats] = None
    objects: Dict[int, List[Tuple[str, int]]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.stopped in ("end", "max_frames")


def is_complete(out: Path) -> bool:
    """True when the run in ``out`` reached the end of its source (or its ``max_frames``)."""
    return (out / COMPLETE_FILE).is_file()


def completed_frames(out: Path) -> int:
    """Number of consecutive palette PNGs ``00000.png``, ``00001.png``, … in ``out``."""
    n = 0
    while (out / f"{n:05d}.png").is_file():
        n += 1
    return n


def _open(run: TrackRun, on_retry):
    return read_video(run.video, backend=run.video_backend, realtime=run.realtime, live_options=run.live,
                      on_retry=on_retry)


def load_references(references) -> List[Tuple[ReferencePhoto, np.ndarray, np.ndarray]]:
    """Each reference's ``(reference, photo RGB uint8 H×W×3, label map uint8 H×W)``, checked: readable files, the
    mask of the photo's size with at least one object (ids 1..255)."""
    loaded = []
    for ref in references:
        photo = read_rgb(ref.image, "reference photo")
        labels = load_label_map(ref.mask)
        if labels.shape != photo.shape[:2]:
            raise MaskError(f"{ref.mask}: the reference mask is {labels.shape[1]}x{labels.shape[0]} (WxH) but its "
                            f"photo {ref.image} is {photo.shape[1]}x{photo.shape[0]}")
        if not labels.any():
            raise MaskError(f"{ref.mask}: no object in the reference mask (every pixel is background, 0)")
        loaded.append((ref, photo, labels))
    return loaded


def add_references(tracker: Tracker, references: List[Tuple[ReferencePhoto, np.ndarray, np.ndarray]]) -> None:
    """Give the tracker every object of every loaded reference (a mask the model cannot use names its file)."""
    for ref, photo, labels in references:
        for obj_id in (int(i) for i in np.unique(labels) if i != 0):
            try:
                tracker.add_reference(obj_id, photo, labels == obj_id)
            except MaskError as err:
                raise MaskError(f"{ref.mask}: {err}") from None


def _first_labels(run: TrackRun, reader) -> Optional[np.ndarray]:
    """The first frame's label map from ``run.mask`` (None with prompts: they need the model and the first frame,
    and are checked against the frame size here)."""
    if run.mask is None:
        for prompt in run.prompts:
            prompt.check(reader.size, f"the first frame of {run.video}")
        return None
    return validate_first_mask(load_label_map(run.mask, run.mask_threshold), reader.size, run.mask,
                               resize=run.resize_mask)


#: Objects entering on one frame: ``(obj_id, mask)`` with ``obj_id`` None for a label map (``uint8 H×W``: its ids
#: not tracked yet enter) or an id for one object's ``bool H×W`` mask.
Entering = List[Tuple[Optional[int], np.ndarray]]


def load_entries(entries: Tuple[ObjectEntry, ...], size: Tuple[int, int], resize: bool) -> Dict[int, Entering]:
    """Every entry's mask, read and checked against the frame ``size`` (``(height, width)``), by frame index."""
    loaded: Dict[int, Entering] = {}
    for entry in entries:
        labels = validate_first_mask(load_label_map(entry.mask), size, entry.mask, resize=resize)
        mask = labels if entry.obj_id is None else labels > 0
        loaded.setdefault(entry.frame, []).append((entry.obj_id, mask))
    return loaded


def track(run: TrackRun, model=None, on_frame: Optional[ProgressFn] = None, stop: Optional[StopControl] = None,
          on_retry: Optional[Callable] = None, known: Optional[Tuple[np.ndarray, Any]] = None) -> RunSummary:
    """Track ``run.video`` into ``run.out`` (see :class:`TrackRun`); ``model``: an already loaded model to use
    instead of ``run.model``'s (its settings are still recorded from ``run.model``); ``on_retry``: called with each
    reconnection attempt of a live stream (:class:`vos.io.live.RetryEvent`; default: a logged warning); ``known``:
    ``(picture, features)`` already encoded with ``model`` (the app's first frame): not encoded again when the run
    starts on that picture.

    A file or folder is opened before the model is loaded (a bad video fails at once); a live source after it (so
    that no frame waits behind the model's loading).
    """
    start = time.perf_counter()
    run.check()
    for path, what in ((run.overlay, "--overlay"), (run.rle, "--rle")):
        if path is not None:
            check_output_file(path, what)
    references = load_references(run.references)
    reader = None if run.is_live else _open(run, on_retry)
    try:
        first = None if reader is None else _first_labels(run, reader)
        entries = {} if reader is None else load_entries(run.entries, reader.size, run.resize_mask)
        if reader is not None and reader.num_frames == 1:
            raise VideoError(f"{run.video}: the video has a single frame: nothing to track after the first-frame mask")
        settings = run.settings()
        folder = RunFolder(run.out, "track", "resume" if run.resume else "overwrite" if run.overwrite else "refuse")
        folder.plan(settings)
        done = completed_frames(run.out) if folder.resuming else 0
        if done and not (run.out / STATE_FILE).is_file():
            raise OutputError(f"{run.out}: cannot resume: {STATE_FILE} is missing; run with --overwrite")
        model = model if model is not None else run.model.load()
        if reader is None:
            reader = _open(run, on_retry)
            first = _first_labels(run, reader)
            entries = load_entries(run.entries, reader.size, run.resize_mask)
        tracker = Tracker(model, options=run.tracker, num_frames=reader.num_frames)
        if known is not None and not done:
            tracker.remember(*known)
        if not done:     # a resumed run has its objects' references in the saved tracker state
            add_references(tracker, references)
        from vos import __version__

        folder.start({**settings, "vos_version": __version__})
        summary = _Loop(run, reader, tracker, model, folder, first, entries, done, on_frame, stop).run()
    finally:
        if reader is not None:
            reader.close()
    summary.seconds = time.perf_counter() - start
    return summary


class _Loop:
    """The frame loop of :func:`track`: outputs, resume replay, stop requests, failure messages."""

    def __init__(self, run: TrackRun, reader, tracker: Tracker, model, folder: RunFolder, first: Optional[np.ndarray],
                 entries: Dict[int, Entering], done: int, on_frame: Optional[ProgressFn],
                 stop: Optional[StopControl]):
        self.opts, self.reader, self.tracker, self.model, self.folder = run, reader, tracker, model, folder
        self.first, self.entries = first, entries
        self.done, self.on_frame, self.stop = done, on_frame, stop or StopControl()
        self.written = 0
        self.total = reader.num_frames if run.max_frames is None else min(run.max_frames,
                                                                          reader.num_frames or run.max_frames)
        self.new_files = [p for p in (run.overlay, run.rle, run.out / STATES_FILE) if p is not None and not p.exists()]
        self.latencies: List[float] = []
        self.finds = bool(run.references or run.redetect)    # notes on the overlay, found / lost in the summary
        self.history = ObjectHistory()
        self.saved = torch.load(run.out / STATE_FILE, weights_only=True) if done else None
        (run.out / COMPLETE_FILE).unlink(missing_ok=True)

    def run(self) -> RunSummary:
        stream_error: Optional[StreamError] = None
        try:
            with contextlib.ExitStack() as stack:
                self._open_writers(stack)
                try:
                    stopped = self._frames()
                except KeyboardInterrupt:
                    stopped = self.stop.reason or "interrupted"
                except StreamError as err:       # the end of a live stream: the outputs are closed as at any end
                    stream_error = err
        except BaseException as err:
            self._failed(err)
            raise
        if stream_error is not None:
            self._failed(stream_error, closed=True)
            raise stream_error
        if self.written == 0 and self.done == 0:
            self._abort()
        outputs = [self.opts.out] + [p for p in (self.opts.overlay, self.opts.rle) if p is not None]
        summary = RunSummary(self.opts.out, self.done + self.written, self.written, self.done, stopped, 0.0, outputs,
                             self._live_stats(), self.history.events)
        if summary.frames:
            self._record()
        if summary.complete and summary.frames:
            atomic_write(self.opts.out / COMPLETE_FILE,
                         lambda f: f.write(json.dumps({"frames": summary.frames, "stopped": stopped}) + "\n"),
                         binary=False)
        return summary

    def _open_writers(self, stack: contextlib.ExitStack) -> None:
        """The overlay, RLE and states writers, and the palette PNG writer (its file marks a frame complete); a
        resumed run keeps the first ``done`` frames' lines and reads their states back."""
        run, resume_from = self.opts, self.done if self.done else None
        self.overlay = None if run.overlay is None else stack.enter_context(
            OverlayWriter(run.overlay, self.reader.fps, self.reader.size))
        self.rle = None if run.rle is None else stack.enter_context(RleWriter(run.rle, resume_from=resume_from))
        self.states = stack.enter_context(StatesWriter(run.out / STATES_FILE, resume_from=resume_from))
        self.kept_states = StatesWriter.read(self.states.path) if self.done else []
        for index, states in enumerate(self.kept_states):
            self.history.add(index, states)
        self.pngs = stack.enter_context(PaletteWriter(run.out))
        self.objects = ObjectMaskWriter(run.out / OBJECTS_DIR) if run.object_pngs else None

    def _frames(self) -> str:
        """Every frame until the source ends, ``max_frames``, ``duration`` or a stop request; returns why it
        ended."""
        frames = iter(self.reader)
        index, started = 0, time.monotonic()
        while True:
            if self.opts.max_frames is not None and index >= self.opts.max_frames:
                return "max_frames"
            if self.opts.duration is not None and time.monotonic() - started >= self.opts.duration:
                return "duration"
            if self.stop.requested:
                return self.stop.reason
            frame = next(frames, None)
            if frame is None:
                return "end"
            t0 = time.perf_counter()
            if index < self.done:
                label_map, result = self._replay(index, frame), None
            else:
                result = self._start(frame) if index == 0 else self._step(index, frame)
                label_map = result.label_map
                with self.stop.write_section():
                    self._write(index, frame, result)
                if self.reader.live and self.reader.last is not None:
                    self.latencies.append(time.monotonic() - self.reader.last.received_at)
            if self.on_frame is not None:
                self.on_frame(FrameEvent(index, self.total, frame, label_map, result, time.perf_counter() - t0))
            index += 1

    def _start(self, frame: np.ndarray) -> FrameResult:
        """Frame 0: the objects of the mask, or of the prompts (decoded on the frame's features, so the encoder still
        runs once on it), or none (only references); with ``redetect`` the frame and its objects become
        references."""
        if self.first is None and self.opts.prompts:
            from vos.prompts import masks_from_prompts

            self.first = masks_from_prompts(self.model, frame, self.opts.prompts, self.tracker.features(frame))
        if self.first is None:
            return self._step(0, frame)
        result = self.tracker.add_objects(frame, self.first)
        if self.opts.redetect:
            for obj_id in (int(i) for i in np.unique(self.first) if i != 0):
                self.tracker.add_reference(obj_id, frame, self.first == obj_id)
        return result

    def _step(self, index: int, frame: np.ndarray) -> FrameResult:
        """Frame ``index`` after the first: the tracked objects tracked, the objects entering here started; before
        any object has entered, an empty frame (not encoded)."""
        entering = {}
        for obj_id, mask in self.entries.get(index, []):
            masks = {obj_id: mask} if obj_id is not None else {int(i): mask == i for i in np.unique(mask) if i != 0}
            entering.update({i: m for i, m in masks.items() if i not in self.tracker.object_ids})
        if not entering and not self.tracker.object_ids:
            return FrameResult(self.tracker.index, np.zeros(frame.shape[:2], np.uint8))
        return self.tracker.step(frame, entering)

    def _write(self, index: int, frame: np.ndarray, result: FrameResult) -> None:
        """One frame's outputs: the overlay, the RLE and states lines, the PNG (the frame is complete), the tracker
        state (frame 0: before the PNG, so that a complete frame 0 always has one; a saved state is never ahead of
        the complete frames, and resuming re-tracks at most one frame)."""
        if index == 0:
            self._save_state()
        states = {i: s.to_json() for i, s in result.states.items()}
        if self.overlay is not None:
            self.overlay.write(index, frame, result.label_map, self._notes(result.states))
        if self.rle is not None:
            self.rle.write(index, frame, result.label_map)
        self.states.write_states(index, states)
        self.history.add(index, states)
        if self.objects is not None:
            self.objects.write(index, result.object_masks)
        self.pngs.write(index, frame, result.label_map)
        if index > 0:
            self._save_state()
        self.written += 1
        if self.written == 1:
            self.folder.commit()

    def _record(self) -> None:
        """When each object was found and lost, into ``vos_run.json`` (runs with references)."""
        if self.finds:
            self.folder.record({"objects": self.history.to_json()})

    def _notes(self, states: Dict[int, ObjectStatus]) -> List[Tuple[int, str]]:
        """The overlay's line per object of a run with references: its state and detection score."""
        return [(i, f"{i}: {s.note}") for i, s in states.items()] if self.finds else []

    def _save_state(self) -> None:
        """The tracker's state and the frame it is at (the tracker counts from the first frame with an object)."""
        state = {**self.tracker.state_dict(), "frame": self.done + self.written}
        atomic_write(self.opts.out / STATE_FILE, lambda f: torch.save(state, f))

    def _replay(self, index: int, frame: np.ndarray) -> np.ndarray:
        """A frame a resumed run already has: re-render the overlay from its PNG (and states line), and bring the
        tracker to the last complete frame: from the saved state and that frame's label map, re-tracking without
        writing the frames after the saved state."""
        label_map = load_label_map(self.pngs.path(index))
        if self.overlay is not None:
            kept = {i: ObjectStatus.from_json(s) for i, s in self.kept_states[index].items()}
            self.overlay.write(index, frame, label_map, self._notes(kept))
        saved = int(self.saved.get("frame", self.saved["index"]))    # older states: no "frame"
        if index == saved:
            self.tracker.load_state_dict(self.saved, label_map)
        elif index > saved:
            self._step(index, frame)
        return label_map

    def _live_stats(self) -> Optional[LiveRunStats]:
        if not self.reader.live:
            return None
        stats, lat = self.reader.stats, sorted(self.latencies)
        return LiveRunStats(stats.received, self.written, stats.dropped,
                            lat[len(lat) // 2] if lat else None, lat[-1] if lat else None)

    def _abort(self) -> None:
        """Nothing was written: remove the files this run created, put a replaced run back."""
        for path in self.new_files:
            for candidate in (path, Path(f"{path}.part")):
                candidate.unlink(missing_ok=True)
        self.folder.abort()

    def _failed(self, err: BaseException, closed: bool = False) -> None:
        """A failure mid-run: undo a run that wrote nothing; otherwise name what it left in the error message
        (``closed``: the outputs were closed normally, as at the end of a live stream)."""
        if self.written == 0 and self.done == 0:
            self._abort()
            return
        with contextlib.suppress(VosError):
            self._record()
        if not isinstance(err, VosError) or not err.args:
            return
        last = self.done + self.written - 1
        if closed:
            stats = self._live_stats()
            left = [f"every output is complete up to frame {last} in {self.opts.out}"
                    + (f" ({stats.line()})" if stats is not None else "")]
        else:
            left = [f"frames 0-{last} are complete in {self.opts.out}"
                    + ("" if self.reader.live else " (--resume continues)")]
            if self.opts.overlay is not None:
                left.append(f"the overlay stays as {self.opts.overlay}.part (playable)")
            if self.opts.rle is not None:
                left.append(f"{self.opts.rle} holds frames 0-{last}")
        err.args = (f"{err.args[0]}; {'; '.join(left)}",) + err.args[1:]
