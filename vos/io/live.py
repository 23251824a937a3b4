"""Live video sources: network streams, a container stream on standard input, cameras, and iterables of frames.

Frames are ``uint8`` arrays of shape ``(H, W, 3)``, RGB, C-contiguous, as from :mod:`vos.io.video`. A
:class:`LiveReader` has the attributes of a :class:`~vos.io.video.VideoReader` (``size``, ``fps``, ``num_frames``,
``backend``; ``live`` is True) and is read once: the length is unknown, so ``num_frames`` is None.

Sources (:class:`LiveReader`, or :func:`~vos.io.video.read_video` with the same string):

* ``rtsp://``, ``rtsps://``, ``http://``, ``https://``, ``tcp://``, ``udp://``, ``srt://`` URLs, decoded by PyAV
  (RTSP over TCP unless :attr:`LiveOptions.rtsp_transport` says ``"udp"``);
* ``"-"``: a container stream (MPEG-TS, Matroska, ...) on standard input, or any binary file object, decoded by
  PyAV (the file descriptor is read directly, so a time-out applies; objects without one are read as they are);
* ``"camera:N"`` (device index) or a ``/dev/video*`` path, through OpenCV;
* any other iterable of RGB ``uint8 (H, W, 3)`` arrays, checked frame by frame.

Delivery: by default every frame, in order, decoded in the caller's thread. With ``realtime=True`` a reader thread
decodes continuously and keeps only the newest frame; each iteration step returns the newest frame not yet
delivered (waiting for one), so a slow consumer skips frames (``stats.dropped``) instead of falling behind.
``last`` describes the frame just delivered: its source frame number and receive time, for latency reports.

Failures raise :class:`StreamError` naming the source: it cannot be opened (open time-out, refused, no video), it
sent nothing for :attr:`LiveOptions.read_timeout` seconds (a stall: not retried), or its connection stayed lost.
A network stream that fails or ends is a dropped connection: it is reopened up to :attr:`LiveOptions.attempts`
times with exponential back-off, each attempt reported (``on_retry``, else a ``logging`` warning), and frames go on
after a reconnect. An ``http(s)`` stream whose server announces a duration is a recording instead: it is read once
(reopening would restart it). Standard input and cameras are not reopened: their end is the end of the video.

:meth:`LiveReader.close` (also run when an iteration ends, fails or is closed) stops the reader thread and releases
the decoder. The thread notices within one frame; a decoder waiting for data gives up after the read time-out.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import select
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator, Optional, Tuple, Union
from urllib.parse import urlsplit

import numpy as np

from vos.errors import InputError, StreamError, VideoError

LIVE_SCHEMES = ("rtsp", "rtsps", "http", "https", "tcp", "udp", "srt")
LiveSource = Union[str, "os.PathLike[str]", BinaryIO, Iterable[np.ndarray]]

_RECORDING_SCHEMES = ("http", "https")  # the only schemes that also serve finite files
_POLL_SECONDS = 0.1                     # how often a pipe read checks for close()
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveOptions:
    """Time-outs and reconnection of live sources (seconds).

    ``open_timeout``: connecting and reading the stream header; ``read_timeout``: longest wait for data once open
    (a stall ends the stream); ``attempts``: reconnections tried after a network stream drops (0 = none), waiting
    ``backoff`` s before the first and doubling up to ``max_backoff``; ``rtsp_transport``: ``"tcp"`` or ``"udp"``.
    """

    open_timeout: float = 10.0
    read_timeout: float = 10.0
    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 8.0
    rtsp_transport: str = "tcp"

    def __post_init__(self) -> None:
        checks = {"open_timeout": self.open_timeout > 0, "read_timeout": self.read_timeout > 0,
                  "attempts": isinstance(self.attempts, int) and self.attempts >= 0, "backoff": self.backoff >= 0,
                  "max_backoff": self.max_backoff >= self.backoff,
                  "rtsp_transport": self.rtsp_transport in ("tcp", "udp")}
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"live options: invalid {name} {getattr(self, name)!r} (time-outs > 0, attempts "
                                 f">= 0, 0 <= backoff <= max_backoff, rtsp_transport 'tcp' or 'udp')")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnection attempt ``attempt`` (1-based)."""
        return min(self.backoff * 2 ** (attempt - 1), self.max_backoff)


@dataclass(frozen=True)
class RetryEvent:
    """One reconnection attempt: ``reason`` is why the previous connection (or attempt) failed."""

    source: str
    attempt: int
    attempts: int
    delay: float
    reason: str

    def __str__(self) -> str:
        return (f"{self.source}: {self.reason}; reconnecting in {self.delay:g} s "
                f"(attempt {self.attempt}/{self.attempts})")


@dataclass
class LiveStats:
    """Frame counters: ``received`` from the source = ``delivered`` + ``dropped`` (+ 1 while one is waiting)."""

    received: int = 0
    delivered: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class FrameInfo:
    """A delivered frame: ``source_index`` = 0-based count of frames received before it; ``received_at`` =
    ``time.monotonic()`` when it was decoded."""

    source_index: int
    received_at: float


RetryCallback = Callable[[RetryEvent], None]
_Item = Tuple[np.ndarray, FrameInfo]


def _log_retry(event: RetryEvent) -> None:
    _logger.warning("%s", event)


def _redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}").geturl()


def _av_reason(err: Exception) -> str:
    """An FFmpeg error's reason without the file name PyAV appends (it may hold credentials)."""
    return getattr(err, "strerror", None) or str(err)


def source_kind(source: object) -> Optional[str]:
    """``"stream"``, ``"pipe"``, ``"camera"`` or ``"frames"`` for a live source; None for a file or folder path."""
    if hasattr(source, "read"):
        return "pipe"
    if isinstance(source, os.PathLike):
        return "camera" if os.fspath(source).startswith("/dev/video") else None
    if isinstance(source, str):
        if source == "-":
            return "pipe"
        if source.startswith(("camera:", "/dev/video")):
            return "camera"
        scheme, sep, _ = source.partition("://")
        return "stream" if sep and scheme.lower() in LIVE_SCHEMES else None
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, Iterable):
        return None
    return "frames"


def is_live_source(source: object) -> bool:
    """Whether :func:`~vos.io.video.read_video` reads ``source`` as a live source (see the module docstring)."""
    return source_kind(source) is not None


class _Lost(Exception):
    """A network connection failed or could not be made (message: the reason)."""


class _PyAVDecoder:
    """The first video stream of an open PyAV input container, as RGB frames."""

    def __init__(self, container, name: str, read_timeout: float):
        import av

        self._av, self._container, self._name, self._read_timeout = av, container, name, read_timeout
        if not container.streams.video:
            container.close()
            raise StreamError(f"{name}: the stream has no video")
        self._stream = container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps: Optional[float] = float(rate) if rate else None
        self.duration: Optional[int] = container.duration

    def frames(self) -> Iterator[np.ndarray]:
        """Decoded frames until the end of the stream; :class:`_Lost` when the stream breaks."""
        try:
            for frame in self._container.decode(self._stream):
                yield np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
        except self._av.error.ExitError:
            raise StreamError(f"{self._name}: no data for {self._read_timeout:g} s (read time-out)") from None
        except self._av.error.FFmpegError as err:
            raise _Lost(_av_reason(err)) from None

    def close(self) -> None:
        self._container.close()


def _open_url(url: str, name: str, options: LiveOptions) -> _PyAVDecoder:
    """Connect to a network stream; :class:`_Lost` with the reason when that fails."""
    import av

    scheme = url.partition("://")[0].lower()
    av_options = {"rtsp_transport": options.rtsp_transport} if scheme in ("rtsp", "rtsps") else {}
    try:
        container = av.open(url, timeout=(options.open_timeout, options.read_timeout), options=av_options)
    except av.error.ExitError:
        raise _Lost(f"no answer for {options.open_timeout:g} s (open time-out)") from None
    except av.error.FFmpegError as err:
        raise _Lost(_av_reason(err)) from None
    return _PyAVDecoder(container, name, options.read_timeout)


class _NetworkFeed:
    """A network stream, reopened with back-off when its connection drops (see the module docstring)."""

    backend = "pyav"

    def __init__(self, url: str, options: LiveOptions, report: RetryCallback, stop: threading.Event):
        self._url, self.name, self._options, self._report, self._stop = url, _redact(url), options, report, stop
        self._recordable = url.partition("://")[0].lower() in _RECORDING_SCHEMES
        self.fps: Optional[float] = None

    def frames(self) -> Iterator[np.ndarray]:
        try:
            decoder = _open_url(self._url, self.name, self._options)
        except _Lost as err:
            raise StreamError(f"{self.name}: cannot open the stream ({err})") from None
        self.fps = decoder.fps
        try:
            while decoder is not None:
                recording = self._recordable and decoder.duration is not None
                try:
                    yield from decoder.frames()
                    if recording:
                        return
                    reason = "the stream ended"
                except _Lost as err:
                    if recording:
                        raise StreamError(f"{self.name}: the stream broke ({err})") from None
                    reason = str(err)
                decoder.close()
                decoder = self._reconnect(reason)
        finally:
            if decoder is not None:
                decoder.close()

    def _reconnect(self, reason: str) -> Optional[_PyAVDecoder]:
        """A new connection after up to ``attempts`` tries, or None when the reader is closed meanwhile."""
        attempts = self._options.attempts
        if attempts == 0:
            raise StreamError(f"{self.name}: connection lost ({reason}); reconnection is off (attempts=0)")
        for attempt in range(1, attempts + 1):
            delay = self._options.delay(attempt)
            self._report(RetryEvent(self.name, attempt, attempts, delay, reason))
            if self._stop.wait(delay):
                return None
            try:
                return _open_url(self._url, self.name, self._options)
            except _Lost as err:
                last = str(err)
                reason = f"reconnect failed ({last})"
        raise StreamError(f"{self.name}: connection lost; {attempts} reconnection attempts failed (last: {last})")


class _PipeReader:
    """A binary file for PyAV whose reads wait at most ``limit`` for data and return EOF once ``stop`` is set."""

    def __init__(self, file: BinaryIO, name: str, stop: threading.Event, limit: Tuple[float, str]):
        self._file, self._name, self._stop = file, name, stop
        self.limit = limit  # (seconds, "open time-out" or "read time-out")
        try:
            self._fd: Optional[int] = file.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None  # in-memory objects: plain reads

    def read(self, size: int) -> bytes:
        if self._fd is None:
            return self._file.read(size)
        seconds, what = self.limit
        deadline = time.monotonic() + seconds
        while not select.select([self._fd], [], [], _POLL_SECONDS)[0]:
            if self._stop.is_set():
                return b""
            if time.monotonic() >= deadline:
                raise StreamError(f"{self._name}: no data for {seconds:g} s ({what})")
        return os.read(self._fd, size)


class _PipeFeed:
    """A container stream read once from a binary file object (standard input for ``"-"``)."""

    backend = "pyav"

    def __init__(self, file: BinaryIO, name: str, options: LiveOptions, stop: threading.Event):
        self._file, self.name, self._options, self._stop = file, name, options, stop
        self.fps: Optional[float] = None

    def frames(self) -> Iterator[np.ndarray]:
        import av

        reader = _PipeReader(self._file, self.name, self._stop, (self._options.open_timeout, "open time-out"))
        try:
            container = av.open(reader, "r")
        except av.error.FFmpegError as err:
            raise StreamError(f"{self.name}: cannot open the stream ({_av_reason(err)})") from None
        reader.limit = (self._options.read_timeout, "read time-out")
        decoder = _PyAVDecoder(container, self.name, self._options.read_timeout)
        self.fps = decoder.fps
        try:
            yield from decoder.frames()
        except _Lost as err:
            raise StreamError(f"{self.name}: cannot read the stream ({err})") from None
        finally:
            decoder.close()


class _CameraFeed:
    """A camera through OpenCV: ``camera:N`` (device index) or a ``/dev/video*`` path (V4L2)."""

    backend = "opencv"

    def __init__(self, spec: str):
        self.name = spec
        self.fps: Optional[float] = None

    def frames(self) -> Iterator[np.ndarray]:
        import cv2

        capture = self._open(cv2)
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps > 0 else None
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    raise StreamError(f"{self.name}: the camera stopped delivering frames")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    def _open(self, cv2):
        index = re.fullmatch(r"camera:(\d+)", self.name)
        if index is None and not self.name.startswith("/dev/video"):
            raise VideoError(f"{self.name}: not a camera: give camera:N (N = 0, 1, ...) or a /dev/video* path")
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our error replaces OpenCV's warnings
        try:
            capture = cv2.VideoCapture(int(index[1])) if index else cv2.VideoCapture(self.name, cv2.CAP_V4L2)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not capture.isOpened():
            capture.release()
            raise StreamError(f"{self.name}: cannot open the camera (no such device, or it is in use)")
        return capture


class _FramesFeed:
    """RGB ``uint8 (H, W, 3)`` arrays from a Python iterable, checked one by one."""

    backend = "iterator"
    fps: Optional[float] = None

    def __init__(self, frames: Iterable[np.ndarray]):
        self._frames = frames
        self.name = f"<{type(frames).__name__}>"

    def frames(self) -> Iterator[np.ndarray]:
        iterator = iter(self._frames)
        try:
            for index, frame in enumerate(iterator):
                yield self._checked(frame, index)
        finally:
            if hasattr(iterator, "close"):
                iterator.close()

    def _checked(self, frame: object, index: int) -> np.ndarray:
        if (not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3
                or frame.shape[2] != 3):
            what = (f"a {frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray)
                    else f"a {type(frame).__name__}")
            raise VideoError(f"{self.name}: frame {index} is {what}: expected an RGB uint8 array of shape "
                             f"(H, W, 3)", frame=index)
        return np.ascontiguousarray(frame)


_Feed = Union[_NetworkFeed, _PipeFeed, _CameraFeed, _FramesFeed]


def _feed(source: LiveSource, kind: str, options: LiveOptions, report: RetryCallback,
          stop: threading.Event) -> _Feed:
    if kind == "frames":
        return _FramesFeed(source)
    if kind == "camera":
        return _CameraFeed(os.fspath(source))
    if kind == "stream":
        return _NetworkFeed(source, options, report, stop)
    if source == "-":
        return _PipeFeed(sys.stdin.buffer, "<stdin>", options, stop)
    name = getattr(source, "name", None)  # a path, "<stdin>", or an int for os.fdopen() objects
    return _PipeFeed(source, name if isinstance(name, str) else "<stream>", options, stop)


def _numbered(frames: Iterator[np.ndarray], name: str, stats: LiveStats) -> Iterator[_Item]:
    """``frames`` numbered, timed, counted in ``stats.received`` and checked against the first frame's size."""
    try:
        size = None
        for index, rgb in enumerate(frames):
            received_at = time.monotonic()
            size = size or rgb.shape[:2]
            if rgb.shape[:2] != size:
                raise VideoError(f"{name}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but the stream "
                                 f"started at {size[1]}x{size[0]}", frame=index)
            stats.received += 1
            yield rgb, FrameInfo(index, received_at)
    finally:
        frames.close()


class _InOrder:
    """Every frame, decoded in the caller's thread when asked for."""

    def __init__(self, first: _Item, frames: Iterator[_Item]):
        self._frames = frames
        self._chain = itertools.chain([first], frames)

    def next(self) -> Optional[_Item]:
        return next(self._chain, None)

    def close(self) -> None:
        self._frames.close()


class _Newest:
    """A reader thread pulls ``frames`` and keeps only the newest; :meth:`next` takes the newest not yet taken."""

    def __init__(self, first: _Item, frames: Iterator[_Item], stats: LiveStats, stop: threading.Event,
                 name: str):
        self._frames, self._stats, self._stop = frames, stats, stop
        self._cond = threading.Condition()
        self._pending: Optional[_Item] = first
        self._error: Optional[Exception] = None
        self._done = False
        self._thread = threading.Thread(target=self._pump, name=f"vos live reader {name}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for item in self._frames:
                with self._cond:
                    if self._pending is not None:
                        self._stats.dropped += 1
                    self._pending = item
                    self._cond.notify()
                if self._stop.is_set():
                    break
        except Exception as err:  # handed to the consumer by next()
            self._error = err
        finally:
            self._frames.close()
            with self._cond:
                self._done = True
                self._cond.notify()

    def next(self) -> Optional[_Item]:
        """The newest frame not yet taken (waiting for one); None at the end; the reader's error after the last."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None or self._done)
            item, self._pending = self._pending, None
        if item is None and self._error is not None:
            raise self._error
        return item

    def close(self) -> None:
        """Ask the reader thread to stop and wait for it (it closes the decoder)."""
        self._stop.set()
        self._thread.join()


class LiveReader:
    """An iterable of RGB ``uint8 (H, W, 3)`` frames from a live source, read once (see the module docstring).

    ``backend``: None, or the one that reads this kind of source (``"pyav"`` for streams and standard input,
    ``"opencv"`` for cameras); another raises :class:`~vos.errors.VideoError`. Opening connects and decodes the
    first frame; it raises :class:`~vos.errors.StreamError` when that fails. Use as a context manager or call
    :meth:`close`.

    Attributes: ``source`` (the name used in messages: the URL without its password, ``<stdin>``, ``camera:0``,
    ...); ``backend`` (``"pyav"``, ``"opencv"`` or ``"iterator"``); ``size`` = ``(height, width)`` of the first
    frame; ``fps`` (float, or None when the source does not say); ``num_frames`` = None; ``live`` = True;
    ``realtime``; ``options`` (:class:`LiveOptions`); ``stats`` (:class:`LiveStats`); ``last`` (:class:`FrameInfo`
    of the frame just delivered, None before the first).
    """

    live = True
    num_frames: Optional[int] = None

    def __init__(self, source: LiveSource, backend: Optional[str] = None, *, realtime: bool = False,
                 options: Optional[LiveOptions] = None, on_retry: Optional[RetryCallback] = None):
        kind = source_kind(source)
        if kind is None:
            raise VideoError(f"{source}: not a live source (a stream URL, '-', a camera or an iterable of frames)")
        self.realtime = realtime
        self.options = options if options is not None else LiveOptions()
        self.stats = LiveStats()
        self.last: Optional[FrameInfo] = None
        stop = threading.Event()  # set by close(): ends the reader thread, a back-off wait, a pipe read
        feed = _feed(source, kind, self.options, on_retry or _log_retry, stop)
        self.source, self.backend = feed.name, feed.backend
        if backend not in (None, feed.backend):
            raise VideoError(f"{self.source}: the video backend {backend!r} cannot read this live source: streams "
                             f"and standard input are read with 'pyav', cameras with 'opencv', frame iterables "
                             f"need none")
        self._consumed = False
        frames = _numbered(feed.frames(), self.source, self.stats)
        try:
            first = next(frames, None)
            if first is None:
                raise StreamError(f"{self.source}: the stream ended before its first frame", frame=0)
        except BaseException:
            frames.close()
            raise
        self.fps: Optional[float] = feed.fps
        self.size: Tuple[int, int] = first[0].shape[:2]
        queue = _Newest(first, frames, self.stats, stop, self.source) if realtime else _InOrder(first, frames)
        self._queue: Union[_InOrder, _Newest] = queue
        self._close = weakref.finalize(self, queue.close)  # also when the reader is dropped unclosed

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._consumed:
            raise StreamError(f"{self.source}: a live source is read once, and this one was read or closed: "
                              f"open it again")
        self._consumed = True
        try:
            while (item := self._queue.next()) is not None:
                frame, self.last = item
                self.stats.delivered += 1
                yield frame
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reader thread and release the decoder (idempotent)."""
        self._consumed = True
        self._close()

    def __enter__(self) -> "LiveReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"LiveReader({self.source!r}, backend={self.backend!r}, size={self.size}, fps={self.fps}, "
                f"realtime={self.realtime})")
