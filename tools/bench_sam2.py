#!/usr/bin/env python
"""Benchmark vos's SAM 2.1 streaming engine against the official sam2 ``SAM2VideoPredictor`` on the same frames.

Setup: SAM 2.1 hiera-tiny at ``--image-size`` (default 1024, the official size) with seeded random weights (compute
does not depend on the weights), the real DAVIS frames of kite-surf (``--data``: 50 frames of 854×480) played
ping-pong (0..49, 48..1, 0..) up to ``--frames`` (200), tracking the first K objects of its first-frame label map for
each K in ``--objects`` (1 and 3). Frames are decoded with PIL, as the official JPEG loader does.

Speed: one process, one model; per K, both systems step through the frames in turn, the order swapped every frame
(official: ``next(propagate_in_video(...))``, i.e. the frame's image encoder, every object's tracking step and the
video-resolution output; vos: ``Tracker.step`` (encoder + tracking) on the frame decoded beforehand). Reported per
system: median wall time (``time.perf_counter``) and median CPU time (``time.process_time``, all threads) per tracked
frame (frames 1..N-1, N-1 runs), the mask frame 0 separately, the official ``init_state`` (decodes and normalises the
whole video up front) separately, and the max |logit difference| of vos's outputs from the official ones.

Memory: peak RSS after each of ``--rss-frames`` (50, 100, 200) frames, each measurement in its own child process
(peak RSS only grows within a process): the official child runs ``init_state`` on a JPEG folder of exactly that many
frames and propagates through it; the vos child streams the same frames, decoding one at a time. The peak counts
from the end of the model build (Linux ``VmHWM`` after a reset through ``/proc/self/clear_refs``; elsewhere
``ru_maxrss``, which includes the build); the RSS after the build (vos's modules imported in both children) is
reported as the baseline.

Usage: python tools/bench_sam2.py [--frames 200] [--objects 1,3] [--rss-frames 50,100,200] [--batched]
                                  [--json out.json]
This takes hours at the defaults on a 2-core CPU; ``--frames 4 --rss-frames 4 --image-size 256`` checks it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vos.errors import InputError  # noqa: E402
from vos.io.atomic import atomic_write  # noqa: E402
from vos.io.images import read_rgb  # noqa: E402
from vos.machine import cpu_info  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "davis-mini"
SEQUENCE = "kite-surf"
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# without sam2's CUDA extension both systems' hole filling warns on every frame and leaves the logits unchanged
warnings.filterwarnings("ignore", message=r"(?s).*Skipping the post-processing step")


def _ints(text: str) -> List[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_sam2.py", formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="DAVIS-layout folder with JPEGImages/480p/kite-surf and Annotations/480p/kite-surf. "
                        "Default: %(default)s")
    p.add_argument("--frames", type=int, default=200, help="frames per timed run (ping-pong). Default: %(default)s")
    p.add_argument("--objects", type=_ints, default=[1, 3],
                   help="object counts to time, comma-separated (the first K ids of frame 0). Default: 1,3")
    p.add_argument("--rss-frames", type=_ints, default=[50, 100, 200],
                   help="frame counts for the peak-RSS children, comma-separated; empty to skip. Default: 50,100,200")
    p.add_argument("--image-size", type=int, default=1024,
                   help="model input size (1024 is SAM 2.1's; smaller only for quick checks). Default: %(default)s")
    p.add_argument("--batched", action="store_true",
                   help="also time the engine with batch_objects=True (one batch for all objects)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's default, %d here)" % torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights. Default: %(default)s")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results to this file")
    p.add_argument("--rss-child", nargs=3, metavar=("SYSTEM", "OBJECTS", "FRAMES"), default=None,
                   help="internal (used by the parent run): process FRAMES frames with SYSTEM and print peak RSS")
    return p


def build_model(image_size: int, seed: int) -> torch.nn.Module:
    """hiera-tiny through the official video-predictor builder, weights drawn from ``seed``, eval mode."""
    from sam2.build_sam import build_sam2_video_predictor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2_video_predictor(CONFIG, ckpt_path=None, device="cpu",
                                           hydra_overrides_extra=[f"++model.image_size={image_size}"])
    return model.requires_grad_(False).eval()


def frame_paths(data: Path, count: int) -> List[Path]:
    """``count`` frame files of the sequence, ping-pong (0..last, last-1..1, 0.. …)."""
    files = sorted((data / "JPEGImages" / "480p" / SEQUENCE).glob("*.jpg"))
    if len(files) < 2:
        raise InputError(f"{data}: no {SEQUENCE} frames under JPEGImages/480p/{SEQUENCE}")
    cycle = files + files[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(count)]


def first_masks(data: Path, objects: int) -> Dict[int, np.ndarray]:
    """The first ``objects`` ids of the sequence's frame-0 label map as bool masks."""
    from PIL import Image

    labels = np.array(Image.open(data / "Annotations" / "480p" / SEQUENCE / "00000.png"))
    ids = [int(i) for i in np.unique(labels) if i != 0][:objects]
    if len(ids) < objects:
        raise InputError(f"{SEQUENCE} has {len(ids)} objects on frame 0, asked for {objects}")
    return {i: labels == i for i in ids}


def jpeg_folder(paths: List[Path], folder: Path) -> str:
    """A folder of links named 00000.jpg … as ``init_state`` expects."""
    for i, path in enumerate(paths):
        (folder / f"{i:05d}.jpg").symlink_to(path.resolve())
    return str(folder)


def official_stepper(model, folder: str, masks: Dict[int, np.ndarray], timings: dict) -> Callable[[int], dict]:
    """``init_state`` + ``add_new_mask`` (timed into ``timings``), then one ``propagate_in_video`` frame per call."""
    t0 = time.perf_counter()
    state = model.init_state(folder)
    timings["init_state_s"] = time.perf_counter() - t0
    for obj_id, mask in masks.items():
        model.add_new_mask(state, 0, obj_id, mask)
    frames = model.propagate_in_video(state)

    def step(index: int) -> dict:
        _, ids, video = next(frames)
        return {obj_id: video[k, 0] for k, obj_id in enumerate(ids)}
    return step


def vos_stepper(model, frames: List[np.ndarray], masks: Dict[int, np.ndarray], batched: bool) -> Callable[[int], dict]:
    from vos.trackers import Tracker

    tracker = Tracker(model, num_frames=len(frames), batch_objects=batched)
    first = label_map_of(masks)

    def step(index: int) -> dict:
        out = tracker.add_objects(frames[0], first) if index == 0 else tracker.step(frames[index])
        return {obj_id: torch.from_numpy(logits) for obj_id, logits in out.logits.items()}
    return step


def label_map_of(masks: Dict[int, np.ndarray]) -> np.ndarray:
    """``uint8 H×W`` label map of non-overlapping ``{id: bool H×W}`` masks."""
    first = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for obj_id, mask in masks.items():
        first[mask] = obj_id
    return first


def time_systems(model, args: argparse.Namespace, objects: int, tmp: Path) -> Dict[str, dict]:
    """Alternate the systems frame by frame; per system the per-frame wall/CPU times and the max logit diff."""
    paths = frame_paths(args.data, args.frames)
    frames = [read_rgb(p, "frame") for p in paths]
    masks = first_masks(args.data, objects)
    folder = tmp / f"official_{objects}"
    folder.mkdir()
    results: Dict[str, dict] = {"official": {}}
    steppers = {"official": official_stepper(model, jpeg_folder(paths, folder), masks, results["official"]),
                "vos": vos_stepper(model, frames, masks, batched=False)}
    if args.batched:
        steppers["vos-batched"] = vos_stepper(model, frames, masks, batched=True)
    for name in steppers:
        results.setdefault(name, {}).update(wall_s=[], cpu_s=[], max_abs_diff_logits=0.0)
    names = list(steppers)
    for index in range(args.frames):
        outputs = {}
        for name in names if index % 2 == 0 else names[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            outputs[name] = steppers[name](index)
            results[name]["wall_s"].append(time.perf_counter() - t0)
            results[name]["cpu_s"].append(time.process_time() - c0)
        for name in names[1:]:
            diff = max(float((outputs[name][i] - outputs["official"][i]).abs().max()) for i in masks)
            results[name]["max_abs_diff_logits"] = max(results[name]["max_abs_diff_logits"], diff)
        print(f"{objects} object(s), frame {index + 1}/{args.frames}: "
              + ", ".join(f"{n} {results[n]['wall_s'][-1]:.2f} s" for n in names), file=sys.stderr, flush=True)
    for r in results.values():
        tracked_wall, tracked_cpu = r["wall_s"][1:] or r["wall_s"], r["cpu_s"][1:] or r["cpu_s"]
        r.update(runs=len(tracked_wall), wall_median_s=statistics.median(tracked_wall),
                 cpu_median_s=statistics.median(tracked_cpu), frame0_wall_s=r["wall_s"][0])
    return results


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def rss_child(args: argparse.Namespace) -> None:
    """Print ``{"peak_rss_mib", "baseline_rss_mib", "method"}`` after running ``--rss-child SYSTEM OBJECTS FRAMES``:
    the peak is taken from the end of the model build on (Linux: peak reset through ``/proc/self/clear_refs``, then
    ``VmHWM``), so the transient of building the model does not hide the tracking's footprint."""
    from vos.trackers import Tracker   # imported by both children, before the baseline

    system, objects, count = args.rss_child[0], int(args.rss_child[1]), int(args.rss_child[2])
    model = build_model(args.image_size, args.seed)
    paths = frame_paths(args.data, count)
    masks = first_masks(args.data, objects)
    baseline = _vm_kib("VmRSS") / 1024
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM, peak reset after the model build"
    except OSError:
        method = "ru_maxrss (includes the model build)"
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        if system == "official":
            state = model.init_state(jpeg_folder(paths, Path(tmp)))
            for obj_id, mask in masks.items():
                model.add_new_mask(state, 0, obj_id, mask)
            for _ in model.propagate_in_video(state):
                pass
        else:
            tracker = Tracker(model, num_frames=count, batch_objects=system == "vos-batched")
            for index, path in enumerate(paths):
                frame = read_rgb(path, "frame")
                if index == 0:
                    tracker.add_objects(frame, label_map_of(masks))
                else:
                    tracker.step(frame)
    if method.startswith("VmHWM"):
        peak = _vm_kib("VmHWM") / 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # KiB on Linux
    print(json.dumps({"peak_rss_mib": peak, "baseline_rss_mib": baseline, "method": method}))


def measure_rss(args: argparse.Namespace, system: str, objects: int, count: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--data", str(args.data), "--image-size",
           str(args.image_size), "--seed", str(args.seed), "--rss-child", system, str(objects), str(count)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(f"peak RSS: {system}, {objects} object(s), {count} frames …", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child {system}/{objects}/{count} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args)
        return 0
    if args.frames < 2 or not args.objects:
        raise InputError("--frames must be at least 2 and --objects name at least one count")
    model = build_model(args.image_size, args.seed)
    load_before = os.getloadavg()[0]
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        speed = {k: time_systems(model, args, k, Path(tmp)) for k in args.objects}
    load_after = os.getloadavg()[0]
    systems = list(next(iter(speed.values())))
    rss = {k: {s: {n: measure_rss(args, s, k, n) for n in args.rss_frames} for s in systems} for k in args.objects}
    cpu = cpu_info()
    result = {"cpu": cpu.to_dict(), "cpu_line": cpu.line(), "torch": torch.__version__,
              "threads": torch.get_num_threads(),
              "model": "sam2.1_hiera_tiny (random weights)", "image_size": args.image_size, "seed": args.seed,
              "sequence": SEQUENCE, "frames": args.frames, "loadavg_1min_before_after": [load_before, load_after],
              "speed": speed, "rss": rss}
    print_table(result)
    if args.json:
        atomic_write(args.json, lambda f: f.write(json.dumps(result, indent=1) + "\n"), binary=False)
    return 0


def print_table(r: dict) -> None:
    print(f"{r['cpu_line']}; torch {r['torch']}, {r['threads']} thread(s); "
          f"{r['model']} at {r['image_size']}, {r['sequence']} ping-pong, {r['frames']} frames; 1-min load "
          "average %.2f before, %.2f after the timed runs" % tuple(r["loadavg_1min_before_after"]))
    print(f"{'objects':>7} {'system':<12} {'runs':>5} {'wall med s':>11} {'CPU med s':>10} {'vs official':>12} "
          f"{'frame 0 s':>10} {'max |Δlogit|':>13}")
    for k, systems in r["speed"].items():
        base = systems["official"]["wall_median_s"]
        for name, s in systems.items():
            diff = "-" if name == "official" else f"{s['max_abs_diff_logits']:.3g}"
            print(f"{k:>7} {name:<12} {s['runs']:>5} {s['wall_median_s']:>11.2f} {s['cpu_median_s']:>10.2f} "
                  f"{s['wall_median_s'] / base:>11.2f}x {s['frame0_wall_s']:>10.2f} {diff:>13}")
        init = systems["official"]["init_state_s"]
        print(f"{'':>7} official init_state (whole video decoded up front): {init:.2f} s")
    for k, systems in r["rss"].items():
        for name, counts in systems.items():
            if counts:
                peaks = ", ".join(f"{n} frames {m['peak_rss_mib']:.0f}" for n, m in counts.items())
                base = next(iter(counts.values()))["baseline_rss_mib"]
                method = next(iter(counts.values()))["method"]
                print(f"peak RSS MiB, {k} object(s), {name}: {peaks} (after the model build: {base:.0f}; {method})")


if __name__ == "__main__":
    from vos.cli.common import run

    sys.exit(run(main))
