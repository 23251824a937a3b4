"""vos.io.live against real components on 127.0.0.1: GStreamer's RTSP server, an HTTP MPEG-TS server, a pipe on
standard input, servers killed or stalled mid-stream, a camera that does not exist, and iterables of frames.

The servers (tests/streaming.py) are separate processes, stopped by pid when each test ends. The clip is the demo
video re-encoded to 320x176 at 25 fps; the streams carry its H.264 unchanged, so every delivered frame must equal the
frame of the clip that its source frame number says.
"""
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import streaming
from vos.errors import InputError, VideoError
from vos.io import LiveOptions, LiveReader, StreamError, is_live_source, read_video

REPO = Path(__file__).resolve().parents[1]
APPLE = REPO / "demo" / "apple.mp4"
READER_THREAD = "vos live reader"
FAST = LiveOptions(open_timeout=5, read_timeout=5, attempts=2, backoff=0.1, max_backoff=0.2)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return streaming.small_clip(APPLE, tmp_path_factory.mktemp("live") / "clip.mp4")


@pytest.fixture(scope="module")
def clip_frames(clip):
    with read_video(clip) as reader:
        return list(reader)


@pytest.fixture(scope="module")
def rtsp_ok():
    reason = streaming.rtsp_unavailable()
    if reason:
        pytest.fail(f"GStreamer RTSP server unavailable ({reason}): apt-get install gir1.2-gst-rtsp-server-1.0 "
                    f"gstreamer1.0-plugins-good python3-gi (.ci/run installs them)")


@pytest.fixture(autouse=True)
def no_reader_thread_left():
    yield
    assert streaming.threads_named(READER_THREAD) == []


def assert_frames_match(frames, infos, clip_frames, start=0):
    """Delivered frame k is the clip frame its source number says (counting from source frame ``start``)."""
    for frame, info in zip(frames, infos):
        assert frame.flags.c_contiguous and frame.dtype == np.uint8
        assert np.array_equal(frame, clip_frames[info.source_index - start]), info


def read_some(reader, count, on_frame=None, frames=None):
    """Up to ``count`` frames of ``reader`` with their FrameInfo; ``on_frame(k)`` runs after frame k arrives.

    Breaking out of the reader's own iteration closes the reader; to read on later, pass ``frames=iter(reader)``.
    """
    delivered, infos = [], []
    for frame in reader if frames is None else frames:
        delivered.append(frame)
        infos.append(reader.last)
        if on_frame is not None:
            on_frame(len(delivered) - 1)
        if len(delivered) == count:
            break
    return delivered, infos


# ------------------------------------------------------------------------------------------------ options, routing

def test_live_options_defaults_backoff_and_validation():
    options = LiveOptions()
    assert (options.open_timeout, options.read_timeout, options.attempts) == (10.0, 10.0, 5)
    assert [options.delay(k) for k in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    for bad in ({"read_timeout": 0}, {"attempts": -1}, {"attempts": 1.5}, {"backoff": 9.0},
                {"rtsp_transport": "http"}):
        with pytest.raises(InputError, match="live options: invalid"):
            LiveOptions(**bad)


def test_routing_of_video_strings(tmp_path):
    for live in ("rtsp://127.0.0.1:8554/live", "RTSPS://h/x", "http://h/x.ts", "https://h/x", "tcp://h:1",
                 "udp://127.0.0.1:1234", "srt://h:1", "-", "camera:0", "/dev/video0", Path("/dev/video2"),
                 io.BytesIO(), iter([])):
        assert is_live_source(live), live
    for offline in ("demo/apple.mp4", Path("-"), tmp_path, "ftp://h/x.mp4", b"clip.mp4"):
        assert not is_live_source(offline), offline
    assert read_video(APPLE).live is False
    with pytest.raises(VideoError, match="realtime mode is for live sources"):
        read_video(APPLE, realtime=True)


def test_backend_that_cannot_read_the_source_is_refused():
    with pytest.raises(VideoError, match="backend 'opencv' cannot read this live source"):
        read_video("rtsp://127.0.0.1:9/live", "opencv")
    with pytest.raises(VideoError, match="backend 'pyav' cannot read"):
        read_video("camera:0", "pyav")


def test_passwords_stay_out_of_messages():
    with pytest.raises(StreamError) as err:
        read_video("rtsp://admin:s3cret@127.0.0.1:9/live")
    assert str(err.value) == "rtsp://admin:***@127.0.0.1:9/live: cannot open the stream (Connection refused)"


# ------------------------------------------------------------------------------------------------------- iterables

def numbered(count: int, size=(6, 8)):
    """Frames whose two first channels hold their index (so a delivered frame tells which one it is)."""
    for index in range(count):
        frame = np.zeros((*size, 3), np.uint8)
        frame[..., 0], frame[..., 1] = index % 256, index // 256
        yield frame


def frame_number(frame: np.ndarray) -> int:
    return int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])


def test_iterable_source_delivers_every_frame_in_order():
    reader = read_video(numbered(5))
    assert (reader.size, reader.fps, reader.num_frames, reader.live, reader.backend) == ((6, 8), None, None, True,
                                                                                          "iterator")
    frames, infos = read_some(reader, 100)
    assert [frame_number(f) for f in frames] == [info.source_index for info in infos] == list(range(5))
    assert (reader.stats.received, reader.stats.delivered, reader.stats.dropped) == (5, 5, 0)
    with pytest.raises(StreamError, match="read once"):
        list(reader)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((6, 8, 3), np.float32), "frame 2 is a float32 array of shape \\(6, 8, 3\\)"),
    (np.zeros((6, 8), np.uint8), "frame 2 is a uint8 array of shape \\(6, 8\\)"),
    (np.zeros((6, 8, 4), np.uint8), "frame 2 is a uint8 array of shape \\(6, 8, 4\\)"),
    ([[0]], "frame 2 is a list"),
    (np.zeros((6, 9, 3), np.uint8), "frame 2 is 9x6 \\(WxH\\) but the stream started at 8x6"),
])
def test_iterable_source_names_the_bad_frame(bad, message):
    frames = [*numbered(2), bad, *numbered(2)]
    delivered = []
    with pytest.raises(VideoError, match=message) as err:
        for frame in read_video(frames):
            delivered.append(frame)
    assert err.value.frame == 2 and len(delivered) == 2
    assert "\n" not in str(err.value)


def test_closing_the_iteration_closes_the_source_generator():
    closed = []

    def frames():
        try:
            yield from numbered(100)
        finally:
            closed.append(True)

    reader = read_video(frames())
    for index, _ in enumerate(reader):
        if index == 3:
            break
    assert closed == [True]
    reader.close()


def slow_consumer(reader, count: int, seconds: float):
    """``count`` frames of ``reader``, sleeping ``seconds`` after each (a tracker slower than the source)."""
    return read_some(reader, count, on_frame=lambda _: time.sleep(seconds))


def test_realtime_iterable_skips_frames_for_a_slow_consumer():
    def paced():
        for frame in numbered(400):
            time.sleep(0.002)
            yield frame

    reader = read_video(paced(), realtime=True)
    frames, infos = slow_consumer(reader, 20, 0.02)
    numbers = [frame_number(f) for f in frames]
    assert numbers == [info.source_index for info in infos]
    assert all(b > a for a, b in zip(numbers, numbers[1:])) and numbers[-1] > 20
    stats = reader.stats
    assert stats.delivered == 20 and stats.dropped > 0
    assert stats.received - stats.delivered - stats.dropped in (0, 1)


# --------------------------------------------------------------------------------------------------------- cameras

@pytest.mark.parametrize("camera", ["camera:57", "/dev/video57"])
def test_missing_camera_is_one_clear_line(camera):
    with pytest.raises(StreamError) as err:
        read_video(camera)
    assert str(err.value) == f"{camera}: cannot open the camera (no such device, or it is in use)"
    with pytest.raises(VideoError, match="camera:front: not a camera: give camera:N"):
        read_video("camera:front")


# ---------------------------------------------------------------------------------------------------- RTSP server

def test_rtsp_stream_delivers_every_frame_in_order(rtsp_ok, clip, clip_frames):
    with streaming.rtsp_server(clip) as server:
        with read_video(server.url, live_options=FAST) as reader:
            assert (reader.size, reader.fps, reader.num_frames, reader.live, reader.backend) == (
                (176, 320), 25.0, None, True, "pyav")
            frames, infos = read_some(reader, len(clip_frames))
    assert [info.source_index for info in infos] == list(range(len(clip_frames)))
    assert_frames_match(frames, infos, clip_frames)
    assert reader.stats.dropped == 0


def test_rtsp_over_udp(rtsp_ok, clip):
    with streaming.rtsp_server(clip) as server:
        options = LiveOptions(open_timeout=5, read_timeout=5, attempts=0, rtsp_transport="udp")
        with read_video(server.url, live_options=options) as reader:
            frames, _ = read_some(reader, 20)
    assert len(frames) == 20 and frames[0].shape == (176, 320, 3)


def test_rtsp_server_killed_mid_stream(rtsp_ok, clip, clip_frames):
    retries = []
    with streaming.rtsp_server(clip) as server:
        reader = read_video(server.url, live_options=FAST, on_retry=retries.append)
        frames, infos = [], []
        started = time.monotonic()
        with pytest.raises(StreamError) as err:
            for frame in reader:
                frames.append(frame)
                infos.append(reader.last)
                if len(frames) == 10:
                    server.kill()
    assert time.monotonic() - started < 10
    assert len(frames) >= 10
    assert_frames_match(frames[:10], infos[:10], clip_frames)
    assert [(r.attempt, r.attempts, r.delay) for r in retries] == [(1, 2, 0.1), (2, 2, 0.2)]
    assert retries[1].reason == "reconnect failed (Connection refused)"
    assert str(retries[1]) == (f"{server.url}: reconnect failed (Connection refused); reconnecting in 0.2 s "
                               f"(attempt 2/2)")
    assert str(err.value) == (f"{server.url}: connection lost; 2 reconnection attempts failed "
                              f"(last: Connection refused)")


def test_rtsp_frames_continue_after_the_server_comes_back(rtsp_ok, clip, clip_frames):
    retries, received_at_retry = [], []

    def on_retry(event):
        retries.append(event)
        received_at_retry.append(reader.stats.received)

    with streaming.rtsp_server(clip) as first:
        reader = read_video(first.url, live_options=LiveOptions(read_timeout=5, attempts=5, backoff=0.2),
                            on_retry=on_retry)
        iteration = iter(reader)
        frames, infos = read_some(reader, 10, frames=iteration)
        first.kill()
        with streaming.rtsp_server(clip, first.port) as second:
            assert second.url == first.url
            more, more_infos = read_some(reader, 60, frames=iteration)
            reader.close()
    frames, infos = frames + more, infos + more_infos
    assert len(retries) >= 1 and retries[0].attempt == 1
    restart = received_at_retry[0]
    assert 10 <= restart < len(frames)
    assert [info.source_index for info in infos] == list(range(len(frames)))
    assert_frames_match(frames[:10], infos[:10], clip_frames)
    assert_frames_match(frames[restart:], infos[restart:], clip_frames, start=restart)


def test_rtsp_realtime_skips_frames_for_a_slow_consumer(rtsp_ok, clip, clip_frames):
    with streaming.rtsp_server(clip) as server:
        reader = read_video(server.url, realtime=True, live_options=FAST)
        latencies = []

        def track(_):   # a tracker step taking 0.1 s: 10 frames/s against a 25 frames/s stream
            latencies.append(time.monotonic() - reader.last.received_at)
            time.sleep(0.1)

        frames, infos = read_some(reader, 12, on_frame=track)
        stats = reader.stats
    numbers = [info.source_index for info in infos]
    assert all(b > a for a, b in zip(numbers, numbers[1:])), numbers
    assert numbers[-1] >= 20 and stats.dropped > 0 and stats.delivered == 12
    assert stats.received - stats.delivered - stats.dropped in (0, 1)
    # the newest frame, not a backlog: a backlog grows by ≈ 0.06 s a frame here (0.1 s a step, 0.04 s a frame), so
    # its latency would pass 0.6 s by the 12th frame and keep growing; the bound leaves room for a loaded machine
    assert float(np.median(latencies[-4:])) < 1.0, latencies
    count = len(clip_frames)   # past the clip's end, the server's next client (the reconnect) gets it again
    for frame, info in zip(frames, infos):
        assert np.array_equal(frame, clip_frames[info.source_index % count]), info


def test_close_during_backoff_stops_the_reader_thread_at_once(rtsp_ok, clip):
    retrying = threading.Event()
    with streaming.rtsp_server(clip) as server:
        reader = read_video(server.url, realtime=True, on_retry=lambda event: retrying.set(),
                            live_options=LiveOptions(read_timeout=5, attempts=3, backoff=30, max_backoff=30))
        server.kill()
        assert retrying.wait(10)
        started = time.monotonic()
        reader.close()
        reader.close()
    assert time.monotonic() - started < 5     # the back-off is 30 s


# ---------------------------------------------------------------------------------------------------- HTTP MPEG-TS

def test_http_mpegts_stream_reconnects_after_it_ends(clip, clip_frames, caplog):
    with streaming.http_server(clip) as server:
        reader = read_video(server.url, live_options=FAST)   # attempts reported to the "vos.io.live" logger
        assert (reader.size, reader.fps, reader.num_frames) == ((176, 320), 25.0, None)
        frames, infos = read_some(reader, len(clip_frames) + 10)
        reader.close()
    count = len(clip_frames)
    assert [info.source_index for info in infos] == list(range(count + 10))
    assert_frames_match(frames[:count], infos[:count], clip_frames)
    assert_frames_match(frames[count:], infos[count:], clip_frames, start=count)   # the server's next client
    assert [(r.name, r.levelname) for r in caplog.records] == [("vos.io.live", "WARNING")]
    assert caplog.records[0].getMessage().startswith(server.url + ": ")
    assert caplog.records[0].getMessage().endswith("; reconnecting in 0.1 s (attempt 1/2)")


def test_http_file_is_a_recording_read_once(clip, clip_frames):
    retries = []
    with streaming.file_server(clip) as server:
        with read_video(server.url, live_options=FAST, on_retry=retries.append) as reader:
            assert (reader.size, reader.fps, reader.num_frames, reader.live) == ((176, 320), 25.0, None, True)
            frames, infos = read_some(reader, 1000)
    assert len(frames) == len(clip_frames) and retries == []
    assert_frames_match(frames, infos, clip_frames)


def test_stall_mid_stream_ends_after_the_read_timeout(clip, clip_frames):
    retries = []
    with streaming.http_server(clip, loops=2, stall_after=40) as server:   # opening reads ~30 frames
        reader = read_video(server.url, on_retry=retries.append,
                            live_options=LiveOptions(open_timeout=5, read_timeout=1, attempts=2, backoff=0.1))
        frames, waited, error = read_until_error(reader)
    assert str(error) == f"{server.url}: no data for 1 s (read time-out)"
    assert 0.9 < waited < 10 and 30 <= len(frames) <= 40 and retries == []


def read_until_error(reader):
    """``(frames, longest wait in seconds for a frame or the error, the StreamError)``: the demuxer hands over the
    frames it still holds when the read time-out fires, so the wait may come before the last frames."""
    frames, times = [], [time.monotonic()]
    with pytest.raises(StreamError) as err:
        for frame in reader:
            frames.append(frame)
            times.append(time.monotonic())
    times.append(time.monotonic())
    return frames, max(np.diff(times)), err.value


def test_server_that_never_answers_fails_after_the_open_timeout():
    with streaming.silent_server() as server:
        started = time.monotonic()
        with pytest.raises(StreamError) as err:
            read_video(server.url, live_options=LiveOptions(open_timeout=1, read_timeout=1))
        waited = time.monotonic() - started
    assert str(err.value) == f"{server.url}: cannot open the stream (no answer for 1 s (open time-out))"
    assert 0.9 < waited < 10


# ------------------------------------------------------------------------------------------------------------ pipes

CONSUMER = """
import hashlib, json
from vos.io import read_video
reader = read_video("-")
digests = [hashlib.md5(frame.tobytes()).hexdigest() for frame in reader]
print(json.dumps({"size": reader.size, "fps": reader.fps, "num_frames": reader.num_frames, "live": reader.live,
                  "delivered": reader.stats.delivered, "digests": digests}))
"""


def test_stdin_pipe_in_a_subprocess(clip, clip_frames):
    feeder = streaming.pipe_feeder(clip)
    try:
        consumer = subprocess.run([sys.executable, "-c", CONSUMER], stdin=feeder.stdout, capture_output=True,
                                  text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        feeder.stdout.close()
        streaming.stop(feeder)
    assert consumer.returncode == 0, consumer.stderr
    result = json.loads(consumer.stdout)
    assert (result["size"], result["fps"], result["num_frames"], result["live"]) == ([176, 320], 25.0, None, True)
    assert result["digests"] == [hashlib.md5(frame.tobytes()).hexdigest() for frame in clip_frames]
    assert "reconnecting" not in consumer.stderr


def test_binary_file_object_without_descriptor(clip, clip_frames):
    stream = io.BytesIO()
    streaming.mpegts(clip, stream)
    stream.seek(0)
    reader = LiveReader(stream)
    frames, infos = read_some(reader, 1000)
    assert len(frames) == len(clip_frames) and reader.source == "<stream>"
    assert_frames_match(frames, infos, clip_frames)


def test_stalled_pipe_ends_after_the_read_timeout(clip):
    stream = io.BytesIO()
    streaming.mpegts(clip, stream)
    data = stream.getvalue()[: len(stream.getvalue()) * 4 // 5]   # opening reads ~30 frames of the 50
    read_fd, write_fd = os.pipe()
    writer = threading.Thread(target=os.write, args=(write_fd, data))
    writer.start()
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            reader = LiveReader(pipe, options=LiveOptions(open_timeout=5, read_timeout=1))
            frames, waited, error = read_until_error(reader)
    finally:
        writer.join()
        os.close(write_fd)
    assert str(error) == "<stream>: no data for 1 s (read time-out)"
    assert 0.9 < waited < 10 and 30 <= len(frames) < 50
