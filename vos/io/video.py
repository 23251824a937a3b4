"""Lazy video readers: one RGB frame at a time from a video file (PyAV, decord, OpenCV) or a folder of images.

Frames are ``uint8`` arrays of shape ``(H, W, 3)``, RGB, indexed ``[row, col, channel]``, C-contiguous.

Behaviour shared by every source:

* Opening decodes the first frame (to learn ``size``); the first iteration starts with that frame, so a normal pass
  decodes every frame once. Iterating again re-opens the source.
* A frame that cannot be decoded raises :class:`~vos.errors.VideoError` with ``frame`` = its 0-based index when the
  iteration reaches it; every earlier frame has been yielded.
* When the decoder stops cleanly before the frame count the container announced (``num_frames``), the iteration ends
  with :class:`~vos.errors.VideoError` ("ended early", ``frame`` = the first missing index) instead of stopping
  silently. PyAV reports a truncated MP4 as a decode error at the damaged frame; OpenCV cannot tell damage from the
  end of the file, so for it this check is the only signal. OpenCV's count may be an estimate (from the duration)
  for containers without a frame count, such as Matroska/WebM.

Rotation: PyAV applies the stream's display matrix (multiples of 90 degrees, mirrored or not; other angles are
rounded to the nearest quarter turn), as the ``ffmpeg`` command line and players do. OpenCV applies the rotation
(not mirroring) itself. decord applies 180-degree rotations but returns broken 4-channel frames for 90-degree ones;
that case raises :class:`~vos.errors.VideoError` suggesting the PyAV backend.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from vos.errors import VideoError
from vos.io.live import LiveOptions, LiveReader, LiveSource, RetryCallback, is_live_source
from vos.io.paths import kind

PathLike = Union[str, os.PathLike]

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv",
                              ".flv", ".3gp"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
BACKENDS = ("pyav", "decord", "opencv")


class _DecodeError(Exception):
    """A backend could not produce the next frame (message: the backend's reason)."""


class _OpenError(Exception):
    """A backend could not open the source (message: the backend's reason)."""


def natural_key(name: str) -> Tuple:
    """Sort key that orders digit runs by value: ``frame2.png`` before ``frame10.png``; ties broken by the name."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts)), name


def _display_transform(matrix: bytes) -> Tuple[int, bool]:
    """``(k, mirror)`` from an FFmpeg display matrix (9 native int32, 16.16 fixed point for the 2x2 part).

    Display = ``np.rot90(decoded, k)`` (k counter-clockwise quarter turns), then mirrored left-right if ``mirror``.
    The matrix of a counter-clockwise rotation by t is ``[[cos t, -sin t], [sin t, cos t]]`` in the FFmpeg layout
    ``(m0, m1; m3, m4)``; a mirror after it negates ``m0`` and ``m3``, leaving ``m1, m4`` and flipping the determinant.
    """
    m0, m1, _, m3, m4 = np.frombuffer(matrix, dtype=np.int32)[:5].astype(np.float64)
    k = round(math.degrees(math.atan2(-m1, m4)) / 90.0) % 4
    return k, m0 * m4 - m1 * m3 < 0


class _PyAVSource:
    """Frames from PyAV, with the display matrix of the first frame applied to every frame."""

    def __init__(self, path: Path):
        import av

        self._av = av
        try:
            self._container = av.open(str(path))
        except av.error.FFmpegError as err:
            raise _OpenError(f"pyav: {err}") from None
        if not self._container.streams.video:
            self._container.close()
            raise _OpenError("pyav: the file has no video stream")
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.fps: Optional[float] = float(rate) if rate else None
        self.num_frames: Optional[int] = stream.frames or None
        self.frames = self._decode(stream)

    def _decode(self, stream) -> Iterator[np.ndarray]:
        transform = None
        try:
            for frame in self._container.decode(stream):
                if transform is None:
                    matrix = frame.side_data.get("DISPLAYMATRIX")
                    transform = _display_transform(bytes(matrix)) if matrix is not None else (0, False)
                rgb = frame.to_ndarray(format="rgb24")
                k, mirror = transform
                if k:
                    rgb = np.rot90(rgb, k)
                if mirror:
                    rgb = rgb[:, ::-1]
                yield np.ascontiguousarray(rgb)
        except self._av.error.FFmpegError as err:
            raise _DecodeError(f"pyav: {err}") from None

    def close(self) -> None:
        self.frames.close()
        self._container.close()


def _decord_reason(err: Exception) -> str:
    """decord's message without its ``[hh:mm:ss] source.cc:line:`` prefixes."""
    return "decord: " + re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(err).splitlines()[0])


class _DecordSource:
    """Frames from decord (``pip install decord``), read sequentially."""

    def __init__(self, path: Path):
        try:
            import decord
        except ImportError:
            raise VideoError(f"{path}: the decord backend is not installed (pip install decord); "
                             f"use backend 'pyav'") from None
        self._decord = decord
        try:
            self._reader = decord.VideoReader(str(path))
        except (RuntimeError, decord.DECORDError) as err:
            raise _OpenError(_decord_reason(err)) from None
        self.fps: Optional[float] = float(self._reader.get_avg_fps()) or None
        self.num_frames: Optional[int] = len(self._reader) or None
        self.frames = self._decode()

    def _decode(self) -> Iterator[np.ndarray]:
        while True:
            try:
                frame = self._reader.next().asnumpy()
            except StopIteration:
                return
            except (RuntimeError, self._decord.DECORDError) as err:
                raise _DecodeError(_decord_reason(err)) from None
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise _DecodeError(f"decord returned frames of shape {frame.shape} (it cannot decode videos with "
                                   f"90-degree rotation metadata): use backend 'pyav'")
            yield frame

    def close(self) -> None:
        self.frames.close()
        del self._reader


class _OpenCVSource:
    """Frames from OpenCV's ``VideoCapture`` (BGR converted to RGB)."""

    def __init__(self, path: Path):
        import cv2

        self._cv2 = cv2
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise _OpenError("opencv: cannot open the file")
        self.fps: Optional[float] = float(self._capture.get(cv2.CAP_PROP_FPS)) or None
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames: Optional[int] = count if count > 0 else None
        self.frames = self._decode()

    def _decode(self) -> Iterator[np.ndarray]:
        while True:
            ok, bgr = self._capture.read()
            if not ok:
                return
            yield self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.frames.close()
        self._capture.release()


class _ImageFolderSource:
    """Frames from the JPEG/PNG files of a folder in natural order (hidden files and other files ignored).

    Opening reads every image header and refuses a folder whose images differ in size, naming the first odd file.
    Grayscale, RGBA and palette images become RGB; EXIF orientation tags are not applied (pixels as stored).
    """

    def __init__(self, folder: Path):
        try:
            self._files = image_files(folder)
        except OSError as err:
            raise _OpenError(f"cannot list the folder: {err}") from None
        if not self._files:
            raise _OpenError("no JPEG/PNG images in the folder")
        size = None
        for index, file in enumerate(self._files):
            try:
                with Image.open(file) as image:
                    file_size = image.size
            except (OSError, ValueError):
                continue  # reported as a decode error when the iteration reaches it
            if size is None:
                size = file_size
            elif file_size != size:
                raise VideoError(f"{file}: the image is {file_size[0]}x{file_size[1]} (WxH) but the frames before it "
                                 f"in {folder} are {size[0]}x{size[1]}", frame=index)
        self.fps: Optional[float] = None
        self.num_frames: Optional[int] = len(self._files)
        self.frames = self._decode()

    def _decode(self) -> Iterator[np.ndarray]:
        for file in self._files:
            try:
                with Image.open(file) as image:
                    rgb = np.asarray(image.convert("RGB"))
            except (OSError, ValueError) as err:
                raise _DecodeError(f"{file.name}: {err}") from None
            yield rgb

    def close(self) -> None:
        self.frames.close()


def image_files(folder: PathLike) -> List[Path]:
    """The JPEG/PNG files of ``folder`` (not hidden), in natural order (``frame2.png`` before ``frame10.png``)."""
    files = [entry for entry in Path(folder).iterdir()
             if not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file()]
    return sorted(files, key=lambda file: natural_key(file.name))


_Source = Union[_PyAVSource, _DecordSource, _OpenCVSource, _ImageFolderSource]


class VideoReader:
    """An iterable of RGB ``uint8 (H, W, 3)`` frames decoded one at a time (see the module docstring).

    Attributes: ``path``; ``backend`` (``"pyav"``, ``"decord"``, ``"opencv"`` or ``"images"``); ``fps`` (float, or
    None when unknown, e.g. image folders); ``num_frames`` (int, or None when the container does not say);
    ``size`` = ``(height, width)`` of the displayed frames; ``live`` = False (see :class:`~vos.io.live.LiveReader`).
    Use as a context manager or call :meth:`close`.
    """

    live = False

    def __init__(self, path: Path, backend: str):
        self.path = path
        self.backend = backend
        source = self._open_source()
        self.fps: Optional[float] = source.fps
        self.num_frames: Optional[int] = source.num_frames
        try:
            first = self._first_frame(source)
        except BaseException:
            source.close()
            raise
        self.size: Tuple[int, int] = (first.shape[0], first.shape[1])
        self._opened: Optional[Tuple[_Source, np.ndarray]] = (source, first)

    def _open_source(self) -> _Source:
        opener = {"pyav": _PyAVSource, "decord": _DecordSource, "opencv": _OpenCVSource,
                  "images": _ImageFolderSource}[self.backend]
        try:
            return opener(self.path)
        except _OpenError as err:
            what = "frame folder" if self.backend == "images" else "video"
            raise VideoError(f"{self.path}: cannot open the {what} ({err})") from None

    def _first_frame(self, source: _Source) -> np.ndarray:
        first = self._next(source, 0)
        if first is None:
            raise VideoError(f"{self.path}: the video has no frames", frame=0)
        return first

    def _next(self, source: _Source, index: int) -> Optional[np.ndarray]:
        """Frame ``index`` from ``source``, or None at the end."""
        try:
            frame = next(source.frames)
        except StopIteration:
            return None
        except _DecodeError as err:
            raise VideoError(f"{self.path}: cannot decode frame {index}: {err}", frame=index) from None
        if index and frame.shape[:2] != self.size:
            raise VideoError(f"{self.path}: frame {index} is {frame.shape[1]}x{frame.shape[0]} (WxH) but the video "
                             f"started at {self.size[1]}x{self.size[0]}", frame=index)
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._opened is not None:
            source, frame = self._opened
            self._opened = None
        else:
            source = self._open_source()
            try:
                frame = self._first_frame(source)
            except BaseException:
                source.close()
                raise
        index = 0
        try:
            while frame is not None:
                yield frame
                index += 1
                frame = self._next(source, index)
        finally:
            source.close()
        if self.num_frames is not None and index < self.num_frames:
            raise VideoError(f"{self.path}: the video ended early: the container lists {self.num_frames} frames "
                             f"but only {index} could be decoded", frame=index)

    def close(self) -> None:
        """Release the decoder held since opening (iterations in progress close theirs when they finish)."""
        if self._opened is not None:
            self._opened[0].close()
            self._opened = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, backend={self.backend!r}, size={self.size}, fps={self.fps}, "
                f"num_frames={self.num_frames})")


def read_video(path: Union[PathLike, LiveSource], backend: Optional[str] = None, *, realtime: bool = False,
               live_options: Optional[LiveOptions] = None,
               on_retry: Optional[RetryCallback] = None) -> Union[VideoReader, LiveReader]:
    """Open a video file or a folder of JPEG/PNG frames for lazy reading, or a live source.

    ``backend`` (video files only; folders are always read with Pillow): ``"pyav"``, ``"decord"``, ``"opencv"``, or
    None = PyAV, falling back to OpenCV when PyAV cannot open the file. Raises :class:`~vos.errors.VideoError` naming
    the path when it is missing, has an unsupported extension, or no backend can open it.

    Live sources (stream URLs, ``"-"`` for standard input, ``camera:N`` or ``/dev/video*``, a binary file object, an
    iterable of frames) open a :class:`~vos.io.live.LiveReader` with ``realtime``, ``live_options`` and ``on_retry``
    (see :mod:`vos.io.live`); ``realtime`` is refused for files and folders.
    """
    if is_live_source(path):
        return LiveReader(path, backend, realtime=realtime, options=live_options, on_retry=on_retry)
    if realtime:
        raise VideoError(f"{path}: realtime mode is for live sources (stream URLs, '-', cameras, frame iterables); "
                         f"a video file or frame folder is read frame by frame")
    path = Path(path)
    if backend is not None and backend not in BACKENDS:
        raise VideoError(f"{path}: unknown video backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    found = kind(path, "video", VideoError)
    if found is None:
        raise VideoError(f"{path}: no such video file or frame folder")
    if found == "dir":
        return VideoReader(path, "images")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise VideoError(f"{path}: unsupported video extension {path.suffix!r}: give a video file "
                         f"({', '.join(sorted(VIDEO_EXTENSIONS))}) or a folder of JPEG/PNG frames")
    if backend is not None:
        return VideoReader(path, backend)
    reasons = []
    for name in ("pyav", "opencv"):
        try:
            return VideoReader(path, name)
        except VideoError as err:
            if err.frame not in (None, 0):
                raise
            reasons.append(str(err).removeprefix(f"{path}: "))
    raise VideoError(f"{path}: no backend can read the video: {'; '.join(reasons)}")
