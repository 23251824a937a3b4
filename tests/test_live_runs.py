"""Live runs end to end: ``tools/track.py`` on real local streams (RTSP, HTTP MPEG-TS, a pipe), prompts instead of a
mask, stream failures, interrupts and realtime mode. Servers on 127.0.0.1 only, stopped by pid; every wait bounded."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import streaming
from conftest import APPLE, APPLE_MASK, MODEL_ARGS, ROOT, one_error_line, pngs, run_tool
from vos.io import load_label_map, read_video
from vos.prompts import ObjectPrompt, masks_from_prompts

TRACK = [sys.executable, str(ROOT / "tools" / "track.py")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return streaming.small_clip(APPLE, tmp_path_factory.mktemp("clip") / "apple.mp4")


@pytest.fixture(scope="module")
def apple_box():
    """The apple's box in the 320×176 clip: ``x0,y0,x1,y1``."""
    mask = np.array(Image.fromarray(load_label_map(APPLE_MASK)).resize((320, 176), Image.NEAREST)) > 0
    ys, xs = np.nonzero(mask)
    return f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"


def outputs(tmp_path: Path, name: str = "run") -> list:
    return ["--out", tmp_path / name, "--overlay", tmp_path / f"{name}.mp4", "--rle", tmp_path / f"{name}.jsonl"]


def complete(tmp_path: Path, name: str = "run") -> int:
    """Every output holds the same frames: PNGs 0..n-1, as many overlay frames and RLE lines; returns n."""
    maps = pngs(tmp_path / name)
    n = len(maps)
    assert list(maps) == [f"{i:05d}.png" for i in range(n)]
    assert len(list(read_video(tmp_path / f"{name}.mp4"))) == n                 # closed, playable
    assert [int(line.split('"frame":')[1].split(",")[0]) for line in
            (tmp_path / f"{name}.jsonl").read_text().splitlines()] == list(range(n))
    return n


def run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*TRACK, *map(str, args)], capture_output=True, text=True, timeout=240, **kwargs)


def test_rtsp_stream_with_a_box_prompt(tmp_path, clip, apple_box):
    """A real RTSP server (GStreamer) on loopback; the first frame's object from a box; frame 0 is the mask the
    prompt decoder gives."""
    assert streaming.rtsp_unavailable() is None, ".ci/run installs GStreamer's RTSP server"
    with streaming.rtsp_server(clip) as server:
        proc = run(["--video", server.url, "--box", apple_box, "--max-frames", "4", *outputs(tmp_path),
                    "--method", "persam", *MODEL_ARGS, "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert complete(tmp_path) == 4
    assert "(max_frames)" in proc.stdout and "frames received, 4 processed" in proc.stdout
    first = pngs(tmp_path / "run")["00000.png"]
    assert set(np.unique(first)) == {0, 1}


def test_http_stream_and_standard_input(tmp_path, clip):
    with streaming.http_server(clip) as server:
        proc = run(["--video", server.url, "--point", "160,90", "--max-frames", "3", *outputs(tmp_path, "http"),
                    "--method", "persam", *MODEL_ARGS, "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert complete(tmp_path, "http") == 3
    feeder = streaming.pipe_feeder(clip)
    try:
        proc = run(["--video", "-", "--mask", tmp_path / "http" / "00000.png", *outputs(tmp_path, "pipe"),
                    "--method", "persam", *MODEL_ARGS, "--no-progress"], stdin=feeder.stdout)
    finally:
        streaming.stop(feeder)
    assert proc.returncode == 0, proc.stderr
    assert complete(tmp_path, "pipe") == 50                       # the whole clip: the pipe's end is the end
    assert "(end)" not in proc.stdout and "50 frames received, 50 processed, 0 dropped" in proc.stdout


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), proc.communicate(timeout=30)


def test_a_server_killed_mid_stream(tmp_path, clip):
    """The frames before are complete in every output, each reconnection attempt is logged, the last line says
    what happened. The server sends 40 frames, then holds the connection open until it is killed: the run has at
    most that backlog to track before the loss shows (a server sending on would leave as many frames in the socket
    buffers as it sent while the run was slower: minutes of tracking on a loaded machine)."""
    with streaming.http_server(clip, stall_after=40) as server:
        proc = subprocess.Popen([*TRACK, "--video", server.url, "--mask", APPLE_MASK, "--resize-mask",
                                 *map(str, outputs(tmp_path)), "--method", "persam", "--reconnect", "2",
                                 *MODEL_ARGS, "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            wait_for(tmp_path / "run" / "00003.png", proc)
            server.kill()
            _, stderr = proc.communicate(timeout=600)      # 40 frames to track first, on a loaded machine
        finally:
            if proc.poll() is None:
                proc.kill()
    retries = [line for line in stderr.splitlines() if line.startswith("warning: ") and "reconnecting" in line]
    assert [r.split("(attempt ")[1] for r in retries] == ["1/2)", "2/2)"], stderr
    line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr),
                          server.url, "connection lost", "2 reconnection attempts failed", "every output is complete")
    n = complete(tmp_path)
    assert n >= 4 and f"up to frame {n - 1}" in line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_a_live_run_cleanly(tmp_path, clip, sig):
    """Ctrl-C (or SIGTERM) during a live run: exit status 0, a summary line, every output complete up to the last
    processed frame (the overlay closed and playable, as many frames as PNGs)."""
    with streaming.http_server(clip, loops=20) as server:
        proc = subprocess.Popen([*TRACK, "--video", server.url, "--mask", APPLE_MASK, "--resize-mask",
                                 *map(str, outputs(tmp_path)), "--method", "persam", *MODEL_ARGS, "--no-progress"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(tmp_path / "run" / "00002.png", proc)
            proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    assert ("(interrupted)" if sig == signal.SIGINT else "(terminated)") in stdout
    n = complete(tmp_path)
    assert n >= 3 and f"{n} complete" in stdout


def test_realtime_drops_frames_of_a_faster_stream(tmp_path, clip):
    """The stream sends 25 frames/s, faster than the tracker: realtime mode skips to the newest frame (dropped
    frames reported), tracks each delivered frame once, and the outputs stay consecutive."""
    with streaming.http_server(clip, loops=4) as server:
        proc = run(["--video", server.url, "--mask", APPLE_MASK, "--resize-mask", "--realtime", "--max-frames", "8",
                    *outputs(tmp_path), "--method", "persam", *MODEL_ARGS, "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert complete(tmp_path) == 8
    stats = proc.stdout.split("; ")[-1]
    received, processed, dropped = (int(stats.split(word)[0].split()[-1]) for word in
                                    (" frames received", " processed", " dropped"))
    assert processed == 8 and dropped > 0 and received >= processed + dropped, stats
    assert "latency median" in stats


def test_point_and_box_prompts_on_the_demo_video(tmp_path, tiny_sam):
    """Prompts turn into the first frame's masks with the model's prompt decoder: frame 0 of the run is exactly the
    label map :func:`masks_from_prompts` gives; ``--object-id`` groups the prompts into objects."""
    frame0 = next(iter(read_video(APPLE)))
    mask = load_label_map(APPLE_MASK) > 0
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    centre = (int(xs.mean()), int(ys.mean()))
    proc = run_tool("track", "--video", APPLE, "--object-id", "1", "--point", f"{centre[0]},{centre[1]}",
                    "--object-id", "5", "--box", ",".join(map(str, box)), "--point", "10,10,0", "--max-frames", "2",
                    "--out", tmp_path / "run", "--method", "persam", *MODEL_ARGS, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    expected = masks_from_prompts(tiny_sam, frame0, [ObjectPrompt(1, ((*centre, 1),)),
                                                     ObjectPrompt(5, ((10, 10, 0),), box)])
    np.testing.assert_array_equal(pngs(tmp_path / "run")["00000.png"], expected)
    assert set(np.unique(expected)) <= {0, 1, 5} and len(pngs(tmp_path / "run")) == 2


def test_live_and_prompt_bad_input(tmp_path):
    base = ["--out", tmp_path / "o", *MODEL_ARGS]
    one_error_line(run_tool("track", "--video", "rtsp://127.0.0.1:9/live", "--point", "1,1", "--resume", *base),
                   "live source", "cannot be rewound")
    one_error_line(run_tool("track", "--video", APPLE, "--point", "5000,10", *base), "point (5000, 10)",
                   "outside the first frame", "1296×720")
    one_error_line(run_tool("track", "--video", APPLE, "--point", "5,x", *base), "--point '5,x'")
    one_error_line(run_tool("track", "--video", APPLE, "--box", "50,50,40,60", *base), "box (50, 50, 40, 60)",
                   "empty or outside")
    one_error_line(run_tool("track", "--video", APPLE, *base), "nothing to track", "--ref-image")
    one_error_line(run_tool("track", "--video", APPLE, "--mask", APPLE_MASK, "--realtime", *base),
                   "--realtime is for live sources")
    assert not (tmp_path / "o").exists()


def test_a_stalled_stream_ends_after_its_read_timeout(tmp_path, clip):
    with streaming.http_server(clip, stall_after=12) as server:
        proc = run(["--video", server.url, "--mask", APPLE_MASK, "--resize-mask", "--read-timeout", "2",
                    *outputs(tmp_path), "--method", "persam", *MODEL_ARGS, "--no-progress"])
    line = one_error_line(proc, "no data for 2 s (read time-out)", "every output is complete")
    n = complete(tmp_path)
    assert 1 <= n <= 12 and f"up to frame {n - 1}" in line


def test_a_stream_searched_for_an_object_from_a_photo(tmp_path, clip):
    """An HTTP stream and a reference photo (the clip's first frame at another size, the apple as its mask): with the
    threshold above every score the object is searched for on every frame (empty masks, a score each); with 0 it is
    found on the first frame received and tracked from there."""
    frame = next(iter(read_video(clip)))
    photo, mask = tmp_path / "photo.png", tmp_path / "photo_mask.png"
    Image.fromarray(frame).resize((480, 264)).save(photo)
    apple = np.array(Image.fromarray(load_label_map(APPLE_MASK)).resize((480, 264), Image.NEAREST))
    Image.fromarray((apple > 0).astype(np.uint8) * 255).save(mask)
    states = {}
    for name, threshold in (("never", "1.5"), ("found", "0")):
        with streaming.http_server(clip) as server:
            proc = run(["--video", server.url, "--ref-image", photo, "--ref-mask", mask, "--detect-threshold",
                        threshold, "--max-frames", "3", *outputs(tmp_path, name), "--method", "persam", *MODEL_ARGS,
                        "--no-progress"])
        assert proc.returncode == 0, proc.stderr
        assert complete(tmp_path, name) == 3
        lines = (tmp_path / name / "vos_states.jsonl").read_text().splitlines()
        states[name] = [json.loads(line)["objects"]["1"] for line in lines]
    assert all(s["state"] == "searching" and s["score"] is not None for s in states["never"])
    assert not any(m.any() for m in pngs(tmp_path / "never").values())
    assert [s["found"] for s in states["found"]] == [True, False, False]
    assert "object 1: found on frame 0" in proc.stdout


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_transport_is_the_one_the_reader_asks_for(tmp_path, clip, transport):
    """An RTSP server offering only ``transport``: ``--rtsp-transport`` with it tracks over it; with the other one
    the server refuses the stream (so the option is what the reader asked the server for), one error line, no
    frame written."""
    assert streaming.rtsp_unavailable() is None, ".ci/run installs GStreamer's RTSP server"
    other = {"tcp": "udp", "udp": "tcp"}[transport]
    base = ["--mask", APPLE_MASK, "--resize-mask", "--method", "persam", *MODEL_ARGS, "--no-progress"]
    with streaming.rtsp_server(clip, transport=transport) as server:
        proc = run(["--video", server.url, "--rtsp-transport", transport, "--max-frames", "4", *outputs(tmp_path),
                    *base])
        refused = run(["--video", server.url, "--rtsp-transport", other, "--reconnect", "0", "--out",
                       tmp_path / "refused", *base])
    assert proc.returncode == 0, proc.stderr
    assert complete(tmp_path) == 4 and "4 processed" in proc.stdout
    one_error_line(refused, server.url, "cannot open the stream", "Protocol not supported")
    assert not list((tmp_path / "refused").glob("*.png"))


def test_open_timeout_of_a_server_that_never_answers(tmp_path):
    """``--open-timeout 1`` (the default is 10 s) is the time-out the run's one error line names."""
    with streaming.silent_server() as server:
        proc = run(["--video", server.url, "--point", "10,10", "--open-timeout", "1", "--out", tmp_path / "run",
                    "--method", "persam", *MODEL_ARGS, "--no-progress"])
    one_error_line(proc, server.url, "cannot open the stream", "no answer for 1 s (open time-out)")
    assert not list((tmp_path / "run").glob("*.png"))


def test_duration_ends_a_live_run(tmp_path, clip):
    """``--duration 3`` on a stream of 40 s: the run ends for that reason (exit 0), every output complete."""
    with streaming.http_server(clip, loops=20) as server:
        proc = run(["--video", server.url, "--mask", APPLE_MASK, "--resize-mask", "--duration", "3",
                    *outputs(tmp_path), "--method", "persam", *MODEL_ARGS, "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    assert "(duration)" in proc.stdout, proc.stdout
    n = complete(tmp_path)
    assert 1 <= n < 1000 and f"{n} complete" in proc.stdout


def clip_of(overlay: np.ndarray, label_map: np.ndarray, clips: dict) -> str:
    """The name of the clip in ``clips`` (``{name: frames}``) with the frame nearest to the source frame of an
    overlay frame: its object pixels unblended (``overlay = (frame + colour) / 2`` there), the 2-pixel outlines (the
    palette colour alone) left out."""
    import cv2

    from vos.io import DAVIS_PALETTE

    frame = overlay.astype(np.int16)
    objects = label_map > 0
    frame[objects] = 2 * frame[objects] - DAVIS_PALETTE[label_map[objects]]
    window = np.ones((3, 3), np.uint8)
    inside = cv2.dilate(label_map, window) == cv2.erode(label_map, window)
    distance = {name: min(np.abs(frame - f)[inside].mean() for f in frames) for name, frames in clips.items()}
    return min(distance, key=distance.get)


@pytest.mark.timeout(1500)
def test_a_live_run_goes_on_after_the_server_is_killed_and_restarted(tmp_path, clip):
    """``tools/track.py`` on an HTTP stream; the server (which sends 40 frames, then holds the connection open: no
    backlog longer than that to track before the loss shows; fewer would stall the opening, which reads ~30) is
    killed mid-stream and another one started on the same port, serving the clip's negative: the run reconnects (a
    warning, no error) and tracks the new stream. The overlay (unblended with the PNG of its frame) shows which stream
    each output frame came from: the clip, then the negative from the reconnect on, with a PNG, an overlay frame and an
    RLE line for every one."""
    negative = streaming.small_clip(APPLE, tmp_path / "negative.mp4", negative=True)
    clips = {"clip": list(read_video(clip)), "negative": list(read_video(negative))}
    err = tmp_path / "stderr.txt"
    with streaming.http_server(clip, stall_after=40) as first, open(err, "w") as stderr:
        proc = subprocess.Popen([*TRACK, "--video", first.url, "--mask", APPLE_MASK, "--resize-mask",
                                 *map(str, outputs(tmp_path)), "--method", "persam", "--reconnect", "8",
                                 *MODEL_ARGS, "--no-progress"], stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            wait_for(tmp_path / "run" / "00003.png", proc)
            first.kill()
            with streaming.http_server(negative, first.port, loops=20):
                deadline = time.monotonic() + 600          # 40 frames to track first, on a loaded machine
                while "reconnecting" not in err.read_text() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                at_reconnect = len(pngs(tmp_path / "run"))
                wait_for(tmp_path / "run" / f"{at_reconnect + 10:05d}.png", proc)
                proc.send_signal(signal.SIGINT)
                stdout, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    log = err.read_text()
    assert proc.returncode == 0, log
    assert "(interrupted)" in stdout and "error:" not in log
    assert next(line for line in log.splitlines() if "reconnecting" in line).endswith("(attempt 1/8)"), log
    n = complete(tmp_path)
    maps = pngs(tmp_path / "run")
    sources = [clip_of(frame, label_map, clips) for frame, label_map in zip(read_video(tmp_path / "run.mp4"),
                                                                           maps.values())]
    switch = sources.index("negative")
    assert 4 <= switch <= min(at_reconnect, 40) and sources == ["clip"] * switch + ["negative"] * (n - switch), sources
    assert n - switch >= 10
