"""Real local stream servers for the live-source tests: each one a separate process on 127.0.0.1, stopped by pid.

Run as a script, this file is one of them (it imports only the standard library at the top, so that Debian's
``/usr/bin/python3`` can run the RTSP server with its GStreamer bindings):

* ``rtsp CLIP PORT [TRANSPORT]``: GStreamer's RTSP server (``gir1.2-gst-rtsp-server-1.0``,
  ``gstreamer1.0-plugins-good``, ``python3-gi``) at ``rtsp://127.0.0.1:PORT/live``, sending the H.264 of an MP4 as
  it is, in real time; every client gets the clip from its start. ``TRANSPORT`` ``tcp`` or ``udp``: the only lower
  transport it offers (a client asking for the other one is refused); default: both.
* ``http CLIP PORT LOOPS STALL``: Python's HTTP server at ``http://127.0.0.1:PORT/live.ts``, sending the clip
  ``LOOPS`` times as a live MPEG-TS stream (muxed by PyAV, paced at the clip's frame rate, no length); with
  ``STALL`` >= 0 it stops sending after that many frames but keeps the connection open.
* ``files FOLDER PORT``: Python's static HTTP server for a folder (files with a length: recordings, not streams).
* ``silent PORT``: accepts TCP connections and never sends a byte.
* ``pipe CLIP``: the clip as MPEG-TS on standard output, paced like ``ffmpeg -re``.

Servers print ``ready PORT`` once they listen (PORT 0 = any free port).
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional

SYSTEM_PYTHON = "/usr/bin/python3"
READY_SECONDS = 20.0
_RTSP_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
               "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
               "missing = [e for e in ('filesrc', 'qtdemux', 'rtph264pay', 'rtpbin') "
               "           if not Gst.ElementFactory.find(e)]; "
               "assert not missing, 'missing GStreamer elements: ' + ' '.join(missing)")


# ------------------------------------------------------------------------------------------------ test-side helpers

@dataclass
class Server:
    """A running server process and the URL it serves."""

    process: subprocess.Popen
    port: int
    url: str

    def kill(self) -> None:
        """Stop the server at once (SIGKILL by pid), as a crash or a pulled cable would."""
        stop(self.process)


def stop(process: subprocess.Popen) -> None:
    """Kill ``process`` by its pid (if still running) and reap it."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def rtsp_unavailable() -> Optional[str]:
    """Why the GStreamer RTSP server cannot run here, or None when it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} is missing"
    result = subprocess.run([SYSTEM_PYTHON, "-c", _RTSP_CHECK], capture_output=True, text=True, timeout=60)
    return result.stderr.strip().splitlines()[-1] if result.returncode else None


@contextlib.contextmanager
def _serve(python: str, args: List[str], url: str) -> Iterator[Server]:
    """Start ``python streaming.py ARGS``, wait for its ``ready PORT`` line, yield it, and kill it afterwards."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([python, __file__, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=log, text=True)
        try:
            port = _ready_port(process, log)
            yield Server(process, port, url.format(port=port))
        finally:
            stop(process)


def _ready_port(process: subprocess.Popen, log: BinaryIO) -> int:
    """The port from the server's ``ready PORT`` line; RuntimeError with its log if it exits or takes too long."""
    if select.select([process.stdout], [], [], READY_SECONDS)[0]:
        line = process.stdout.readline().split()
        if len(line) == 2 and line[0] == "ready":
            return int(line[1])
    stop(process)
    log.seek(0)
    raise RuntimeError(f"server {process.args[2:]} did not start: {log.read().decode(errors='replace')[-2000:]}")


def rtsp_server(clip: Path, port: int = 0, transport: str = "any") -> "contextlib.AbstractContextManager[Server]":
    return _serve(SYSTEM_PYTHON, ["rtsp", str(clip), str(port), transport], "rtsp://127.0.0.1:{port}/live")


def http_server(clip: Path, port: int = 0, loops: int = 1,
                stall_after: int = -1) -> "contextlib.AbstractContextManager[Server]":
    return _serve(sys.executable, ["http", str(clip), str(port), str(loops), str(stall_after)],
                  "http://127.0.0.1:{port}/live.ts")


def file_server(clip: Path) -> "contextlib.AbstractContextManager[Server]":
    """Python's static HTTP server for the folder of ``clip``, at the URL of ``clip``."""
    return _serve(sys.executable, ["files", str(clip.parent), "0"], "http://127.0.0.1:{port}/" + clip.name)


def silent_server() -> "contextlib.AbstractContextManager[Server]":
    return _serve(sys.executable, ["silent", "0"], "http://127.0.0.1:{port}/live.ts")


def pipe_feeder(clip: Path) -> subprocess.Popen:
    """A process writing the clip as paced MPEG-TS to its stdout pipe (the caller stops it with :func:`stop`)."""
    return subprocess.Popen([sys.executable, __file__, "pipe", str(clip)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE)


def small_clip(src: Path, dst: Path, width: int = 320, height: int = 176, fps: int = 25,
               negative: bool = False) -> Path:
    """``src`` re-encoded small and fast: H.264 (no B-frames, a keyframe every 5 frames) at ``fps``, with its index
    first (faststart), as MP4s served over HTTP are stored; ``negative``: its colours inverted (a clip told apart
    from the original at a glance)."""
    from fractions import Fraction

    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "tune": "zerolatency",
                                                              "g": "5"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, frame in enumerate(inp.decode(video=0)):
            frame = frame.reformat(width=width, height=height, format="rgb24" if negative else "yuv420p")
            if negative:
                frame = av.VideoFrame.from_ndarray(255 - frame.to_ndarray(), "rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return dst


def mpegts(clip: Path, out: BinaryIO, loops: int = 1, paced: bool = False, stall_after: int = -1) -> None:
    """Write ``clip`` (its video stream, not re-encoded) ``loops`` times to ``out`` as one MPEG-TS stream.

    ``paced``: each packet at its time, as ``ffmpeg -re`` does; ``stall_after`` >= 0: after that many packets,
    sleep for an hour instead of sending more.
    """
    import av

    with av.open(out, "w", format="mpegts", options={"flush_packets": "1"}) as ts:
        start, offset, sent, stream = time.monotonic(), 0, 0, None
        for _ in range(loops):
            with av.open(str(clip)) as inp:
                video = inp.streams.video[0]
                stream = stream or ts.add_stream_from_template(video)
                end = offset
                for packet in inp.demux(video):
                    if packet.dts is None:
                        continue
                    if sent == stall_after:
                        time.sleep(3600)
                    packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                    end = max(end, packet.dts + packet.duration)
                    if paced:
                        time.sleep(max(0.0, start + float(packet.dts * packet.time_base) - time.monotonic()))
                    packet.stream = stream
                    ts.mux(packet)
                    sent += 1
                offset = end


def threads_named(prefix: str) -> List[str]:
    """Names of this process's live threads that start with ``prefix``."""
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(prefix)]


# ---------------------------------------------------------------------------------------------------- the servers

def _serve_rtsp(clip: str, port: int, transport: str) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{clip}" ! qtdemux ! rtph264pay name=pay0 pt=96 config-interval=1 )')
    if transport != "any":
        factory.set_protocols({"tcp": GstRtsp.RTSPLowerTrans.TCP, "udp": GstRtsp.RTSPLowerTrans.UDP}[transport])
    server.get_mount_points().add_factory("/live", factory)
    if not server.attach(None):
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


def _serve_http(clip: str, port: int, loops: int, stall_after: int) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # no length: the stream ends when the connection closes

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                mpegts(Path(clip), self.wfile, loops, paced=True, stall_after=stall_after)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


def _serve_files(folder: str, port: int) -> None:
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), partial(Handler, directory=folder))
    server.daemon_threads = True
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


def _serve_silent(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port))
    print(f"ready {listener.getsockname()[1]}", flush=True)
    connections = []
    while True:
        connections.append(listener.accept()[0])


def main(argv: List[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "rtsp":
        _serve_rtsp(args[0], int(args[1]), args[2] if len(args) > 2 else "any")
    elif command == "http":
        _serve_http(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif command == "files":
        _serve_files(args[0], int(args[1]))
    elif command == "silent":
        _serve_silent(int(args[0]))
    elif command == "pipe":
        with contextlib.suppress(BrokenPipeError):
            mpegts(Path(args[0]), sys.stdout.buffer, paced=True)
    else:
        raise SystemExit(f"unknown server {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
