#!/usr/bin/env python
"""Benchmark the stock segment-anything image encoder against vos's exact fast encoder on one real frame.

One model with seeded random weights (the official architecture: compute cost does not depend on the weights; the
zero-initialised relative-position tables are drawn too, so that the exactness figure covers them), one frame
resized and padded as SAM does, under ``torch.inference_mode()``. In one process the two variants run alternately
(stock, vos, stock, vos, … ``--runs`` rounds; the encoder classes are swapped in place, so both use the very same
weights), reporting per variant the median wall time and median CPU seconds (``time.process_time``, all threads)
per frame, and the max |difference| of their outputs. Peak memory is measured for each variant in its own child
process (peak RSS only grows within a process): the child builds the model and input, resets the peak (Linux
``/proc/self/clear_refs``; elsewhere ``getrusage`` deltas), runs one forward and reports peak RSS minus the RSS
before it.

Usage: python tools/bench_encoder.py [--model vit_b] [--runs 3] [--image frame.jpg] [--json out.json]
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
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vos.errors import InputError, OutputError  # noqa: E402
from vos.io.images import read_rgb  # noqa: E402
from vos.machine import cpu_info  # noqa: E402

DEFAULT_IMAGE = ROOT / "tests" / "data" / "fast_encoder" / "blackswan_00000.jpg"
MODELS = ("vit_b", "vit_l", "vit_h", "hq_vit_b", "hq_vit_l", "hq_vit_h", "tiny")
VARIANTS = ("stock", "vos")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_encoder.py",
        description="Time the stock SAM image encoder against vos's fast encoder (same random weights, same frame) "
                    "and check that they agree.")
    p.add_argument("--model", choices=MODELS, default="vit_b",
                   help="architecture, built with seeded random weights: vit_b/vit_l/vit_h (segment-anything), "
                        "hq_vit_* (HQ-SAM, also compares interm_embeddings), tiny (test configuration). "
                        "Default: %(default)s")
    p.add_argument("--runs", type=int, default=3,
                   help="rounds of alternating runs (stock then vos in each); medians are over these. "
                        "Default: %(default)s")
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                   help="RGB frame to encode, resized to a 1024 long side and padded as SAM does. "
                        "Default: the DAVIS blackswan frame in tests/data/fast_encoder")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's default, %d here)" % torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights. Default: %(default)s")
    p.add_argument("--skip-memory", action="store_true",
                   help="do not run the two child processes that measure peak memory")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results to this file")
    p.add_argument("--memory-child", choices=VARIANTS, default=None,
                   help="internal (used by the parent run): measure the peak RSS increase of one forward of this "
                        "variant in this process and print it as JSON")
    return p


def build_model(name: str, seed: int) -> torch.nn.Module:
    """The architecture ``name`` with weights drawn from ``seed`` (relative-position tables included), eval mode."""
    from vos.models.registry import get_spec

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = get_spec(name).build()
        with torch.no_grad():
            for pname, param in sam.image_encoder.named_parameters():
                if "rel_pos" in pname:
                    param.copy_(0.02 * torch.randn(param.shape))
    return sam.eval()


def encoder_input(sam: torch.nn.Module, rgb) -> torch.Tensor:
    """An RGB ``uint8 H×W×3`` frame as SAM's encoder input: resized to the encoder's long side, normalised, padded;
    (1, 3, S, S)."""
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(sam.image_encoder.img_size).apply_image(rgb)
    x = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    return sam.preprocess(x)


def set_variant(sam: torch.nn.Module, variant: str) -> None:
    """Switch the image encoder of ``sam`` in place to ``variant`` ("stock" or "vos")."""
    from vos.models.fast_encoder import use_fast_encoder, use_stock_encoder

    if variant == "vos":
        use_fast_encoder(sam)
    else:
        use_stock_encoder(sam)


def outputs(out) -> List[torch.Tensor]:
    """The encoder's output tensors: [embeddings] or, for HQ-SAM, [embeddings, *interm_embeddings]."""
    return [out[0], *out[1]] if isinstance(out, tuple) else [out]


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _peak_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def memory_child(args: argparse.Namespace) -> None:
    """Print ``{"peak_rss_increase_mib": …, "method": …}`` for one forward of ``args.memory_child``."""
    rgb = read_rgb(args.image, "frame")
    sam = build_model(args.model, args.seed)
    set_variant(sam, args.memory_child)
    x = encoder_input(sam, rgb)
    with torch.inference_mode():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
            before, method = _rss_kib(), "VmHWM after forward - VmRSS before (peak reset via /proc/self/clear_refs)"
            sam.image_encoder(x)
            after = _peak_kib()
        except OSError:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            method = "ru_maxrss delta across the forward (undercounts if the setup peak was higher)"
            sam.image_encoder(x)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_increase_mib": (after - before) / 1024, "method": method}))


def measure_memory(args: argparse.Namespace, variant: str) -> Dict[str, object]:
    """Run :func:`memory_child` for ``variant`` in a fresh interpreter and return its JSON."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model", args.model, "--image", str(args.image),
           "--seed", str(args.seed), "--memory-child", variant]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {variant} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        raise InputError(f"--runs must be at least 1, got {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return 0
    from tqdm import tqdm

    rgb = read_rgb(args.image, "frame")
    sam = build_model(args.model, args.seed)
    x = encoder_input(sam, rgb)
    load_before = os.getloadavg()[0]
    wall: Dict[str, List[float]] = {v: [] for v in VARIANTS}
    cpu: Dict[str, List[float]] = {v: [] for v in VARIANTS}
    first: Dict[str, List[torch.Tensor]] = {}
    with torch.inference_mode():
        for _ in tqdm(range(args.runs), desc=f"{args.model} stock/vos rounds", unit="round", file=sys.stderr):
            for variant in VARIANTS:
                set_variant(sam, variant)
                t0, c0 = time.perf_counter(), time.process_time()
                out = sam.image_encoder(x)
                wall[variant].append(time.perf_counter() - t0)
                cpu[variant].append(time.process_time() - c0)
                first.setdefault(variant, outputs(out))
    load_after = os.getloadavg()[0]
    diffs = [float((a - b).abs().max()) for a, b in zip(first["stock"], first["vos"])]
    memory = {} if args.skip_memory else {v: measure_memory(args, v) for v in VARIANTS}

    result = {
        "model": args.model, "image": str(args.image), "input_shape": list(x.shape), "runs": args.runs,
        "seed": args.seed, "threads": torch.get_num_threads(), "cpu": cpu_info().to_dict(),
        "cpu_line": cpu_info().line(), "torch": torch.__version__,
        "loadavg_1min_before_after": [load_before, load_after],
        "variants": {v: {"wall_s": wall[v], "cpu_s": cpu[v], "wall_median_s": statistics.median(wall[v]),
                         "cpu_median_s": statistics.median(cpu[v]),
                         "peak_rss_increase_mib": memory.get(v, {}).get("peak_rss_increase_mib")}
                     for v in VARIANTS},
        "speedup_wall": statistics.median(wall["stock"]) / statistics.median(wall["vos"]),
        "speedup_cpu": statistics.median(cpu["stock"]) / statistics.median(cpu["vos"]),
        "max_abs_diff_embeddings": diffs[0],
        "max_abs_diff_interm_embeddings": max(diffs[1:]) if len(diffs) > 1 else None,
        "memory_method": next(iter(memory.values()))["method"] if memory else None,
    }
    print_table(result)
    if args.json:
        write_json(args.json, result)
    return 0


def print_table(r: Dict[str, object]) -> None:
    print(r["cpu_line"])
    print(f"model {r['model']}, input {tuple(r['input_shape'])} from {Path(r['image']).name}, {r['runs']} "
          f"alternating round(s), torch {r['torch']}, {r['threads']} thread(s), "
          "1-min load average %.2f before, %.2f after the timed runs" % tuple(r["loadavg_1min_before_after"]))
    print(f"{'variant':<8} {'wall median s':>14} {'CPU median s':>13} {'peak RSS +MiB':>14}")
    for v, s in r["variants"].items():
        mem = "-" if s["peak_rss_increase_mib"] is None else f"{s['peak_rss_increase_mib']:.0f}"
        print(f"{v:<8} {s['wall_median_s']:>14.2f} {s['cpu_median_s']:>13.2f} {mem:>14}")
    print(f"speed-up (stock/vos): wall {r['speedup_wall']:.2f}x, CPU {r['speedup_cpu']:.2f}x")
    line = f"max |stock - vos|: embeddings {r['max_abs_diff_embeddings']:.3g}"
    if r["max_abs_diff_interm_embeddings"] is not None:
        line += f", interm_embeddings {r['max_abs_diff_interm_embeddings']:.3g}"
    print(line)
    if r["memory_method"]:
        print(f"memory: one forward per variant in its own process; {r['memory_method']}")


def write_json(path: Path, result: Dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err}") from None


if __name__ == "__main__":
    from vos.cli.common import run

    sys.exit(run(main))
