"""Resident memory of one ``vos.runs.track`` run, measured in a process of its own (``tests/test_memory.py`` starts
it, so that no other test's allocations count).

``python tests/memory_probe.py MODEL FRAMES MASK OUT --at 50,500 [--method persam] [--checkpoint FILE]``: tracks the
frame folder ``FRAMES`` from the first-frame mask ``MASK`` into the run folder ``OUT`` with the model ``MODEL``
(random weights unless ``--checkpoint``) on the CPU, on the default path, up to the last frame measured, and
prints one JSON line:
``{"rss": {frame index: resident bytes after that frame}, "frames": frames tracked}``.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
from pathlib import Path

import torch

from vos.runs.options import ModelOptions, TrackRun
from vos.runs.track import FrameEvent, track
from vos.trackers import TrackerOptions


def resident_bytes() -> int:
    """The process's resident set size now (``/proc/self/statm``), after a garbage collection and glibc's
    ``malloc_trim`` (freed heap pages go back to the system, so that what is counted is what is still allocated)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("frames")
    parser.add_argument("mask")
    parser.add_argument("out", type=Path)
    parser.add_argument("--at", required=True, help="comma-separated 0-based frame indices to measure after")
    parser.add_argument("--method", default=None)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    at = {int(i) for i in args.at.split(",")}
    rss = {}

    def on_frame(event: FrameEvent) -> None:
        if event.index in at:
            rss[event.index] = resident_bytes()

    model = ModelOptions(args.model, checkpoint=args.checkpoint, device="cpu", random_weights=args.checkpoint is None)
    run = TrackRun(args.frames, args.mask, args.out, max_frames=max(at) + 1, model=model,
                   tracker=TrackerOptions(method=args.method))
    summary = track(run, on_frame=on_frame)
    print(json.dumps({"rss": rss, "frames": summary.frames}))


if __name__ == "__main__":
    main()
