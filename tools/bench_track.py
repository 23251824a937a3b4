#!/usr/bin/env python
"""Benchmark the streaming tracker against the encoder it cannot avoid.

In one process, frame by frame and alternating (encoder only, tracker with K=1, tracker with K=K2), on real DAVIS
frames: median wall time and CPU seconds per frame of each, their ratio, and the marginal cost of an extra object.
Each tracker frame is timed in two parts, its encoder pass and its step (everything after the features: prompts,
decoder passes, post-processing, label map); a frame is their sum. The step medians give the per-object cost
without the encoder's run-to-run noise (±0.5 s on a ViT-B frame here, more than the objects cost).
Then, in a child process with a small model, peak RSS after N and after 10·N frames (memory must stay flat).

The models are the official architectures with seeded random weights (``--random-weights``: compute cost does not
depend on the weight values). The masks are then meaningless, so objects are kept alive by reporting how many were
predicted per frame; a tracker that lost objects would look cheaper than it is.

Usage: python tools/bench_track.py [--model vit_b] [--encoder stock] [--frames N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEQ = ROOT.parent / "shared" / "data" / "davis-mini" / "JPEGImages" / "480p" / "kite-surf"
FALLBACK_SEQ = ROOT / "tests" / "data" / "davis_frames" / "JPEGImages" / "480p" / "kite-surf"


def synthetic_objects(hw, k: int) -> np.ndarray:
    """K elliptical objects (ids 1..K) spread over the frame: ``uint8 H×W`` label map."""
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros(hw, np.uint8)
    for i in range(k):
        cx, cy = w * (i + 1) / (k + 1), h * (0.35 + 0.3 * (i % 2))
        label[((xx - cx) / (w / (3 * k))) ** 2 + ((yy - cy) / (h / 6)) ** 2 <= 1] = i + 1
    return label


def frames_from(seq: Path, n: int):
    from vos.io import read_video

    out = []
    while len(out) < n:
        for frame in read_video(seq):
            out.append(frame)
            if len(out) == n:
                break
    return out


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w, time.process_time() - c


def speed(args) -> dict:
    from vos.models import load_sam
    from vos.persam import encode_image
    from vos.trackers import Tracker

    sam = load_sam(args.model, random_weights=True, encoder=args.encoder, device="cpu", precision=args.precision)
    frames = frames_from(args.seq, args.frames + 1)
    trackers = {}
    for k in (1, args.objects):
        tracker = Tracker(sam, method=args.method, decoder_batch=args.decoder_batch, fit_iterations=args.fit_iterations)
        _, wall, cpu = timed(lambda: tracker.add_objects(frames[0], synthetic_objects(frames[0].shape[:2], k)))
        trackers[k] = (tracker, wall)
    kk = f"K{args.objects}"
    names = ("encoder", "K1", kk, "K1 step", f"{kk} step")
    rows = {name: {"wall": [], "cpu": []} for name in names}
    present = {1: [], args.objects: []}
    for frame in frames[1:]:
        _, w, c = timed(lambda: encode_image(sam, frame))
        rows["encoder"]["wall"].append(w)
        rows["encoder"]["cpu"].append(c)
        for k, (tracker, _) in trackers.items():
            tracker.forget_frame()            # a fresh frame for each tracker: its encoder pass is timed too
            _, we, ce = timed(lambda: tracker.features(frame))
            result, w, c = timed(lambda: tracker.step(frame))      # the frame's features are reused
            for name, (wall, cpu) in ((f"K{k}", (we + w, ce + c)), (f"K{k} step", (w, c))):
                rows[name]["wall"].append(wall)
                rows[name]["cpu"].append(cpu)
            present[k].append(sum(1 for s in result.scores.values() if s == s))
        print("frame: " + ", ".join(f"{n} {r['wall'][-1]:.2f}s" for n, r in rows.items()), flush=True)
    med = {n: {m: statistics.median(v) for m, v in r.items()} for n, r in rows.items()}
    per_object = {m: (med[f"{kk} step"][m] - med["K1 step"][m]) / (args.objects - 1) for m in ("wall", "cpu")}
    return {
        "median_wall_s": {n: m["wall"] for n, m in med.items()},
        "median_cpu_s": {n: m["cpu"] for n, m in med.items()},
        "ratio_K_to_encoder": med[kk]["wall"] / med["encoder"]["wall"],
        "ratio_K_to_encoder_cpu": med[kk]["cpu"] / med["encoder"]["cpu"],
        "ratio_K_to_encoder_from_steps": 1 + med[f"{kk} step"]["wall"] / med["encoder"]["wall"],
        "ratio_K_to_encoder_from_steps_cpu": 1 + med[f"{kk} step"]["cpu"] / med["encoder"]["cpu"],
        "marginal_per_object_s": per_object["wall"],
        "marginal_per_object_cpu_s": per_object["cpu"],
        "marginal_per_object_fraction_of_frame": per_object["wall"] / med["encoder"]["wall"],
        "objects_predicted_per_frame": {f"K{k}": v for k, v in present.items()},
        "setup_wall_s (object start incl. PerSAM-F fit)": {f"K{k}": t for k, (_, t) in trackers.items()},
        "runs": args.frames,
    }


def memory_child(args) -> None:
    """Child process: track 10·N frames with a small model, print peak RSS after N and after 10·N frames."""
    from vos.models import load_sam
    from vos.trackers import Tracker

    sam = load_sam(args.mem_model, random_weights=True, encoder=args.encoder, device="cpu")
    frames = frames_from(args.seq, 8)
    tracker = Tracker(sam, method=args.method, fit_iterations=args.fit_iterations)
    tracker.add_objects(frames[0], synthetic_objects(frames[0].shape[:2], args.objects))
    peaks = {}
    for i in range(1, 10 * args.mem_frames + 1):
        tracker.step(frames[i % len(frames)].copy())
        if i in (args.mem_frames, 10 * args.mem_frames):
            peaks[i] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(peaks))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_b")
    p.add_argument("--encoder", choices=("stock", "fast"), default="stock")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="image encoder precision (bf16 needs the fast encoder and a CPU with BF16 dot products)")
    p.add_argument("--method", choices=("persam", "persam_f"), default="persam_f")
    p.add_argument("--objects", type=int, default=5, help="K for the multi-object run (default 5)")
    p.add_argument("--frames", type=int, default=3, help="timed frames per variant (default 3)")
    p.add_argument("--decoder-batch", type=int, default=None)
    p.add_argument("--fit-iterations", type=int, default=800)
    p.add_argument("--seq", type=Path, default=DEFAULT_SEQ if DEFAULT_SEQ.is_dir() else FALLBACK_SEQ)
    p.add_argument("--mem-model", default="tiny", help="model of the memory part (default: tiny)")
    p.add_argument("--mem-frames", type=int, default=5, help="N of the memory part (default 5: N and 10·N frames)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.memory_child:
        memory_child(args)
        return 0
    from vos.machine import cpu_info

    cpu = cpu_info()
    report = {"model": args.model, "encoder": args.encoder, "precision": args.precision, "method": args.method,
              "objects": args.objects,
              "frames_from": str(args.seq), "threads": torch.get_num_threads(), "cpu": cpu.to_dict(),
              "loadavg_1min_before": os.getloadavg()[0]}
    if not args.skip_speed:
        report["speed"] = speed(args)
    if not args.skip_memory:
        cmd = [sys.executable, __file__, "--memory-child", "--mem-model", args.mem_model, "--mem-frames",
               str(args.mem_frames), "--encoder", args.encoder, "--method", args.method, "--objects",
               str(args.objects), "--seq", str(args.seq), "--fit-iterations", str(args.fit_iterations)]
        peaks = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        n, n10 = str(args.mem_frames), str(10 * args.mem_frames)
        report["memory"] = {"model": args.mem_model, f"peak_rss_MiB_after_{n}": peaks[n],
                            f"peak_rss_MiB_after_{n10}": peaks[n10], "ratio": peaks[n10] / peaks[n]}
    print(json.dumps(report, indent=1))
    print(f"\n{cpu.line()}; torch {torch.__version__}, {report['threads']} thread(s); 1-min load average "
          f"{report['loadavg_1min_before']:.2f} before the runs; {args.model}, {args.encoder} encoder, "
          f"{args.precision}, {args.method}")
    if "speed" in report:
        s = report["speed"]
        print("\n| measure | median wall s | median CPU s |\n|---|---|---|")
        for name in s["median_wall_s"]:
            print(f"| {name} per frame | {s['median_wall_s'][name]:.2f} | {s['median_cpu_s'][name]:.2f} |")
        print(f"| K={args.objects} frame / encoder | {s['ratio_K_to_encoder']:.3f} | "
              f"{s['ratio_K_to_encoder_cpu']:.3f} |")
        print(f"| (encoder + K={args.objects} step) / encoder | {s['ratio_K_to_encoder_from_steps']:.3f} | "
              f"{s['ratio_K_to_encoder_from_steps_cpu']:.3f} |")
        print(f"| extra object (from the steps) | {s['marginal_per_object_s']:.3f} "
              f"({100 * s['marginal_per_object_fraction_of_frame']:.2f} % of a frame) | "
              f"{s['marginal_per_object_cpu_s']:.3f} |")
    if "memory" in report:
        print(f"memory ({args.mem_model}): {report['memory']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
