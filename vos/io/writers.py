"""Streaming writers for tracker output: palette PNGs, an overlay video, COCO RLE JSON Lines.

Every writer has ``write(index, frame, label_map)`` and ``close()`` and is a context manager. ``index`` is the 0-based
frame index, ``frame`` the RGB ``uint8 (H, W, 3)`` input frame (used by :class:`OverlayWriter` only; the others accept
None), ``label_map`` the ``uint8 (H, W)`` ids (0 = background). Each frame is written when it comes, so an interrupted
run keeps every completed frame.
"""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from vos.errors import InputError, OutputError
from vos.io.masks import DAVIS_PALETTE, PathLike, as_label_map, save_palette_png

#: Frame rate of the overlay video when the input has none (a folder of images).
DEFAULT_FPS = 25.0


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{folder}: cannot create the output folder: {err}") from None


class _Writer(ABC):
    @abstractmethod
    def write(self, index: int, frame: Optional[np.ndarray], label_map: np.ndarray) -> None:
        """Write frame ``index``."""

    def close(self) -> None:
        """Finish the output (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()


class PaletteWriter(_Writer):
    """DAVIS-style result folder: ``out_dir/00000.png``, ``00001.png``, ... (5-digit frame index), mode-P PNGs with
    the DAVIS palette, each written atomically (temporary file + rename)."""

    def __init__(self, out_dir: PathLike):
        self.out_dir = Path(out_dir)
        _make_dir(self.out_dir)

    def path(self, index: int) -> Path:
        """The PNG file of frame ``index``."""
        return self.out_dir / f"{index:05d}.png"

    def write(self, index: int, frame: Optional[np.ndarray], label_map: np.ndarray) -> None:
        save_palette_png(self.path(index), label_map)


class ObjectMaskWriter:
    """Each object's own mask, before the objects are merged: ``out_dir/<id:03d>/<index:05d>.png``, palette PNGs with
    the values 0 / 1 (SAM 2's per-object PNG layout, which SA-V's evaluator reads), each written atomically."""

    def __init__(self, out_dir: PathLike):
        self.out_dir = Path(out_dir)

    def path(self, obj_id: int, index: int) -> Path:
        return self.out_dir / f"{obj_id:03d}" / f"{index:05d}.png"

    def write(self, index: int, masks: Dict[int, np.ndarray]) -> None:
        """Frame ``index``'s masks ``{id: bool H×W}``."""
        for obj_id, mask in masks.items():
            path = self.path(obj_id, index)
            _make_dir(path.parent)
            save_palette_png(path, np.asarray(mask, np.uint8))


def draw_overlay(frame: np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """``frame`` (RGB ``uint8 (H, W, 3)``) with each object blended 50/50 with its DAVIS palette colour and outlined.

    The outline is 2 px wide: the pixels on both sides of every label change (object/background or object/object),
    in the colour of the larger id there.
    """
    import cv2

    colours = DAVIS_PALETTE[label_map]
    out = frame.copy()
    objects = label_map > 0
    out[objects] = (frame[objects].astype(np.uint16) + colours[objects] + 1) // 2
    kernel = np.ones((3, 3), np.uint8)
    high = cv2.dilate(label_map, kernel)
    edge = high != cv2.erode(label_map, kernel)
    out[edge] = DAVIS_PALETTE[high[edge]]
    return out


def draw_notes(image: np.ndarray, notes: Sequence[Tuple[int, str]]) -> np.ndarray:
    """``image`` (RGB ``uint8 H×W×3``) with one line of text per ``(object id, text)`` in the top-left corner, each in
    the object's palette colour on a dark band (integer rasterisation: the same notes always give the same pixels)."""
    import cv2

    out = image.copy()
    scale = max(image.shape[0] / 720, 0.35)
    step = int(round(26 * scale))
    for row, (obj_id, text) in enumerate(notes):
        y = step * (row + 1)
        (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, 2)
        cv2.rectangle(out, (4, y - height - 4), (12 + width, y + 4), (0, 0, 0), cv2.FILLED)
        colour = tuple(int(c) for c in DAVIS_PALETTE[obj_id])
        cv2.putText(out, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour, 2, cv2.LINE_8)
    return out


def rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """RGB ``uint8 H×W×3`` (H, W even) → planar YUV 4:2:0 ``uint8 (3H/2)×W`` (Y, then U, then V): BT.601 limited
    range in integer arithmetic (the coefficients swscale uses for this conversion), chroma from the mean of each
    2×2 block.

    Done here rather than by FFmpeg because swscale derives its tables with the C maths library, whose results can
    change when another library in the process (torch's) provides those functions: the same overlay would then be
    encoded differently in a run that resumes (re-rendering its frames before any model runs) and in one that
    did not.
    """
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    height, width = r.shape
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    r2, g2, b2 = ((c.reshape(height // 2, 2, width // 2, 2).sum((1, 3)) + 2) >> 2 for c in (r, g, b))
    u = ((-38 * r2 - 74 * g2 + 112 * b2 + 128) >> 8) + 128
    v = ((112 * r2 - 94 * g2 - 18 * b2 + 128) >> 8) + 128
    return np.concatenate([y.ravel(), u.ravel(), v.ravel()]).astype(np.uint8).reshape(height * 3 // 2, width)


class OverlayWriter(_Writer):
    """An H.264 (yuv420p) MP4 of the frames with the objects drawn on them (:func:`draw_overlay`).

    Encoded at a constant quantiser (QP 20): unlike CRF, its decisions use no floating-point rate control, so the same
    frames always give the same file (a resumed run's overlay equals an uninterrupted run's).

    ``size`` is the frames' ``(height, width)``. yuv420p needs even sizes: an odd height or width is padded by one
    row/column repeating the last one, so no pixel of the input is lost. ``fps`` None means :data:`DEFAULT_FPS`.
    Frames are encoded as they come into ``path + ".part"``, which is renamed to ``path`` by :meth:`close`. When the
    ``with`` block ends with an exception the video is finalised but kept as ``.part`` (playable, nothing lost).
    Frame ``index`` is shown at ``index / fps`` seconds; indices must increase.
    """

    def __init__(self, path: PathLike, fps: Optional[float], size: Tuple[int, int]):
        import av

        self._av = av
        self.path = Path(path)
        self.part_path = Path(f"{self.path}.part")
        if self.path.suffix.lower() != ".mp4":
            raise OutputError(f"{self.path}: the overlay video must be an .mp4 file")
        fps = DEFAULT_FPS if fps is None else float(fps)
        if not fps > 0:
            raise InputError(f"{self.path}: the frame rate must be positive, got {fps}")
        self.size = (int(size[0]), int(size[1]))
        height, width = self.size
        _make_dir(self.path.parent)
        try:
            self._container = av.open(str(self.part_path), "w", format="mp4")
        except (av.error.FFmpegError, OSError) as err:
            raise OutputError(f"{self.part_path}: cannot create the overlay video: {err}") from None
        self._stream = self._container.add_stream("h264", rate=Fraction(fps).limit_denominator(1001),
                                                  options={"qp": "20", "preset": "veryfast"})
        self._stream.height, self._stream.width = height + height % 2, width + width % 2
        self._stream.pix_fmt = "yuv420p"
        self._last_index = -1
        self._open = True

    def write(self, index: int, frame: Optional[np.ndarray], label_map: np.ndarray,
              notes: Sequence[Tuple[int, str]] = ()) -> None:
        """Frame ``index`` with its objects drawn, and ``notes`` (``(object id, text)`` lines, :func:`draw_notes`)."""
        label_map = as_label_map(label_map, self.path)
        if frame is None or frame.shape != (*self.size, 3) or frame.dtype != np.uint8 or label_map.shape != self.size:
            got = None if frame is None else f"{frame.shape} {frame.dtype}"
            raise InputError(f"{self.path}: frame {index}: expected an RGB uint8 frame and a label map of "
                             f"{self.size[1]}x{self.size[0]} (WxH), got frame {got}, label map {label_map.shape}")
        if index <= self._last_index:
            raise InputError(f"{self.path}: frame {index} comes after frame {self._last_index}: indices must increase")
        image = draw_overlay(frame, label_map)
        if notes:
            image = draw_notes(image, notes)
        height, width = self.size
        if height % 2 or width % 2:
            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        video_frame = self._av.VideoFrame.from_ndarray(rgb_to_yuv420(image), format="yuv420p")
        video_frame.pts = index
        self._encode(video_frame)
        self._last_index = index

    def _encode(self, video_frame) -> None:
        """Encode one frame (None flushes the encoder) and mux the packets."""
        try:
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
        except (self._av.error.FFmpegError, OSError) as err:
            raise OutputError(f"{self.part_path}: cannot write the overlay video: {err}") from None

    def _finish(self) -> None:
        self._open = False
        try:
            self._encode(None)
        finally:
            self._container.close()

    def close(self) -> None:
        """Flush the encoder, finalise the MP4 and rename ``.part`` to the final name."""
        if self._open:
            self._finish()
            os.replace(self.part_path, self.path)

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        elif self._open:
            self._finish()


def json_records(path: PathLike, what: str) -> Iterator[Tuple[bytes, dict]]:
    """``(raw line, record)`` of the complete lines of a JSON Lines file of per-frame records (a line that is not
    such a record is an :class:`OutputError`)."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
                int(record["frame"])
            except (ValueError, KeyError, TypeError):
                raise OutputError(f"{path}: line {number} is not a {what} record; cannot resume") from None
            yield line, record


class _JsonLines:
    """A JSON Lines file of per-frame records ``{"frame": i, …}``, each line flushed and fsync'ed. ``resume_from=k``
    keeps the existing lines before the first record of a frame >= k (and before a line cut short by a crash),
    drops the rest, and appends after them; without it the file is started afresh."""

    what = "JSON Lines"

    def __init__(self, path: PathLike, resume_from: Optional[int] = None):
        self.path = Path(path)
        _make_dir(self.path.parent)
        try:
            if resume_from is not None and self.path.exists():
                os.truncate(self.path, self._kept_bytes(resume_from))
            self._file = open(self.path, "a" if resume_from is not None else "w", encoding="utf-8")
        except OSError as err:
            raise OutputError(f"{self.path}: cannot open the {self.what} file: {err}") from None

    def _kept_bytes(self, resume_from: int) -> int:
        """Length of the leading complete records with a frame index below ``resume_from``."""
        kept = 0
        for line, record in json_records(self.path, self.what):
            if int(record["frame"]) >= resume_from:
                break
            kept += len(line)
        return kept

    def _append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        try:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write frame {record['frame']}: {err}") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()


class RleWriter(_JsonLines, _Writer):
    """JSON Lines of COCO RLE masks, one line per frame:
    ``{"frame": i, "objects": {"<id>": {"size": [H, W], "counts": "<compressed RLE>"}}}``.

    Only the ids present in the frame are listed; ``resume_from`` as for every JSON Lines output (:class:`_JsonLines`).
    """

    what = "RLE"

    def write(self, index: int, frame: Optional[np.ndarray], label_map: np.ndarray) -> None:
        from pycocotools import mask as mask_utils

        label_map = as_label_map(label_map, self.path)
        counts = np.bincount(label_map.ravel(), minlength=256)
        fortran = np.asfortranarray(label_map)
        objects = {}
        for object_id in np.flatnonzero(counts[1:]) + 1:
            rle = mask_utils.encode((fortran == object_id).view(np.uint8))
            objects[str(object_id)] = {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}
        self._append({"frame": int(index), "objects": objects})


class StatesWriter(_JsonLines):
    """``vos_states.jsonl``: one line per frame, ``{"frame": i, "objects": {"<id>": {"state": "searching" |
    "tracking", "score": <float or null>, "found": <bool>}}}`` for every object of the run (``score``: the
    detector's score where it ran on that frame; ``found``: a detection started or restarted tracking there).
    ``resume_from`` as for every JSON Lines output; :meth:`read` reads a states file back."""

    what = "states"

    def write_states(self, index: int, states: Dict[int, dict]) -> None:
        """Frame ``index``: ``{id: {"state", "score", "found"}}``."""
        self._append({"frame": int(index), "objects": {str(i): s for i, s in sorted(states.items())}})

    @staticmethod
    def read(path: PathLike) -> List[Dict[int, dict]]:
        """The per-frame objects of the complete lines of a states file, frame 0 first."""
        return [{int(i): s for i, s in record["objects"].items()} for _, record in json_records(path, "states")]
