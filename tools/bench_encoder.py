#!/usr/bin/env python
"""Benchmark the stock segment-anything image encoder against vos's fast encoder, in float32 and in bfloat16.

One model with seeded random weights (the official architecture: compute cost does not depend on the weights; the
zero-initialised relative-position tables are drawn too, so that the error figures cover them), one frame resized
and padded as SAM does, under ``torch.inference_mode()``. Variants: ``stock`` (segment_anything, float32), ``vos``
(the fast encoder, float32, exact), ``stock_bf16`` (segment_anything under ``torch.autocast("cpu", bfloat16)``) and
``vos_bf16`` (``precision="bf16"``). In one process they run alternately (stock, vos, stock_bf16, vos_bf16, …
``--runs`` rounds; the encoder classes are swapped in place, so all use the very same weights), reporting per
variant the median wall time and median CPU seconds (``time.process_time``, all threads) per frame, the speed-up
over stock float32, and the max and relative (Frobenius) difference of its output from stock float32's. The bf16
variants run only where the CPU has bfloat16 dot products (elsewhere they are skipped with the reason: emulated,
they take minutes a frame). Peak memory is measured for each variant in its own child process (peak RSS only grows
within a process): the child builds the model and input, resets the peak (Linux ``/proc/self/clear_refs``;
elsewhere ``getrusage`` deltas), runs one forward and reports peak RSS minus the RSS before it.

``--fit`` also times PerSAM-F fitting against the encoder pass: the reference logits of ``--image`` with the
``--fit-mask`` object (PerSAMF.set_reference with the same model, fast fp32 encoder) are computed once, then each round
ends with one fit of the two mask weights on them (``--fit-iterations`` steps, lr 1e-3, as PerSAMF.fit), each in a
fresh interpreter importing this checkout's vos, and, with ``--fit-baseline DIR``, alternately one importing the vos
of checkout DIR (e.g. the code before a change); reported: median wall and CPU seconds of the fit alone, and its ratio
to the vos fp32 encoder pass.

Usage: python tools/bench_encoder.py [--model vit_b] [--runs 3] [--variants stock,vos,stock_bf16,vos_bf16]
                                     [--image frame.jpg] [--json out.json]
                                     [--fit [--fit-mask mask.png] [--fit-baseline DIR] [--fit-iterations 1000]]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
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
DEFAULT_FIT_MASK = ROOT / "tests" / "data" / "davis_eval" / "data" / "davis-mini" / "Annotations" / "480p" / \
    "blackswan" / "00000.png"
#: One PerSAM-F fit in a child interpreter (whichever vos its PYTHONPATH provides): argv = inputs file, iterations;
#: prints the wall and CPU seconds of fit_mask_weights alone and the learned weights as JSON.
FIT_CHILD = """
import json, sys, time, torch
import vos
from vos.persam.finetune import fit_mask_weights
inputs = torch.load(sys.argv[1], weights_only=True)
w, c = time.perf_counter(), time.process_time()
fit = fit_mask_weights(inputs["logits"], inputs["target"], int(sys.argv[2]), 1e-3)
print(json.dumps({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
                  "weights": fit.weights.tolist(), "vos": vos.__file__}))
"""
MODELS = ("vit_b", "vit_l", "vit_h", "hq_vit_b", "hq_vit_l", "hq_vit_h", "tiny")
VARIANTS = ("stock", "vos", "stock_bf16", "vos_bf16")


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
                   help="rounds of alternating runs (each variant once per round); medians are over these. "
                        "Default: %(default)s")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated variants to run, from: " + ", ".join(VARIANTS) + " (stock is always run: "
                        "it is the reference). Default: all; the bf16 ones only where the CPU has bfloat16 dot "
                        "products")
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                   help="RGB frame to encode, resized to a 1024 long side and padded as SAM does. "
                        "Default: the DAVIS blackswan frame in tests/data/fast_encoder")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's default, %d here)" % torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights. Default: %(default)s")
    p.add_argument("--skip-memory", action="store_true",
                   help="do not run the two child processes that measure peak memory")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results to this file")
    p.add_argument("--fit", action="store_true",
                   help="also time one PerSAM-F fit per round (in a child interpreter) against the encoder pass")
    p.add_argument("--fit-mask", type=Path, default=DEFAULT_FIT_MASK,
                   help="object mask of --image for the fit (any non-zero pixel is the object). Default: the DAVIS "
                        "blackswan annotation of the default image")
    p.add_argument("--fit-iterations", type=int, default=1000, help="steps of each fit. Default: %(default)s")
    p.add_argument("--fit-baseline", type=Path, default=None, metavar="DIR",
                   help="with --fit: also time, alternately, the fit of the vos checkout in DIR (PYTHONPATH=DIR)")
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


def set_variant(sam: torch.nn.Module, variant: str) -> contextlib.AbstractContextManager:
    """Switch the image encoder of ``sam`` in place to ``variant``; returns the context to run it in (autocast for
    ``stock_bf16``)."""
    from vos.models.fast_encoder import use_fast_encoder, use_stock_encoder

    if variant.startswith("vos"):
        use_fast_encoder(sam, precision="bf16" if variant.endswith("bf16") else "fp32")
    else:
        use_stock_encoder(sam)
    if variant == "stock_bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def chosen_variants(text: str) -> List[str]:
    """The variants of ``--variants`` in run order, stock first; bf16 ones dropped (with a note) where the CPU lacks
    bfloat16 dot products."""
    asked = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in asked if v not in VARIANTS]
    if unknown:
        raise InputError(f"--variants: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    from vos.models.precision import bf16_missing

    missing = bf16_missing("cpu")
    chosen = [v for v in VARIANTS if v == "stock" or v in asked]
    if missing and any(v.endswith("bf16") for v in chosen):
        print(f"bf16 variants skipped: {missing}", file=sys.stderr)
        chosen = [v for v in chosen if not v.endswith("bf16")]
    return chosen


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``‖out − ref‖ / ‖ref‖`` (Frobenius norms, float64)."""
    return float((out.double() - ref.double()).norm() / ref.double().norm())


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
    context = set_variant(sam, args.memory_child)
    x = encoder_input(sam, rgb)
    with torch.inference_mode(), context:
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


def save_fit_inputs(sam: torch.nn.Module, rgb, mask_path: Path, out: Path) -> Dict[str, object]:
    """Save PerSAMF's training inputs on ``rgb`` with the object of ``mask_path`` (the three reference logit maps
    ``3×H×W`` and the target ``bool H×W``, from the vos fp32 encoder) to ``out``; returns their description."""
    from vos.io.masks import load_label_map
    from vos.persam import PerSAMF

    with set_variant(sam, "vos"):
        engine = PerSAMF(sam).set_reference(rgb, load_label_map(mask_path) > 0)
    logits, target = engine._train
    torch.save({"logits": logits, "target": target}, out)
    return {"mask": str(mask_path), "logits_shape": list(logits.shape), "target_pixels": int(target.sum()),
            "logit_range": [float(logits.min()), float(logits.max())]}


def time_fit(checkout: Path, inputs: Path, iterations: int) -> Dict[str, object]:
    """One fit in a fresh interpreter importing the vos of ``checkout``: ``{"wall_s", "cpu_s", "weights"}``. It runs
    in the folder of ``inputs`` (``python -c`` puts the working directory first on ``sys.path``)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.run([sys.executable, "-c", FIT_CHILD, str(inputs), str(iterations)], capture_output=True,
                          text=True, env=env, cwd=inputs.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"the fit with {checkout} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(result["vos"]).resolve().is_relative_to(checkout.resolve()):
        raise RuntimeError(f"the fit child for {checkout} imported {result['vos']} instead")
    return result


def fit_summary(runs: Dict[str, List[Dict[str, object]]], encoder: Dict[str, float], about: Dict[str, object]
                ) -> Dict[str, object]:
    """Medians of each fit variant's runs and their ratio to the vos fp32 encoder pass (``encoder``: its median
    wall and CPU seconds)."""
    out: Dict[str, object] = {**about, "variants": {}}
    for name, rows in runs.items():
        wall, cpu = [r["wall_s"] for r in rows], [r["cpu_s"] for r in rows]
        out["variants"][name] = {"checkout": rows[0]["checkout"], "wall_s": wall, "cpu_s": cpu,
                                 "wall_median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu),
                                 "vs_vos_encoder_wall": statistics.median(wall) / encoder["wall"],
                                 "vs_vos_encoder_cpu": statistics.median(cpu) / encoder["cpu"],
                                 "weights": rows[0]["weights"]}
    if len(runs) == 2:
        this, base = (out["variants"][n] for n in runs)
        out["speedup_wall"] = base["wall_median_s"] / this["wall_median_s"]
        out["max_abs_diff_weights"] = max(abs(a - b) for a, b in zip(this["weights"], base["weights"]))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        raise InputError(f"--runs must be at least 1, got {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return 0
    if args.fit_baseline and not (args.fit_baseline / "vos" / "persam" / "finetune.py").is_file():
        raise InputError(f"--fit-baseline {args.fit_baseline}: no vos checkout there (vos/persam/finetune.py)")
    from tqdm import tqdm

    variants = chosen_variants(args.variants)
    if args.fit and "vos" not in variants:
        raise InputError("--fit is measured against the vos fp32 encoder pass: include vos in --variants")
    rgb = read_rgb(args.image, "frame")
    sam = build_model(args.model, args.seed)
    x = encoder_input(sam, rgb)
    fits = {"fit": ROOT, **({"fit_baseline": args.fit_baseline.resolve()} if args.fit_baseline else {})}
    fits = fits if args.fit else {}
    fit_runs: Dict[str, List[Dict[str, object]]] = {name: [] for name in fits}
    scratch = tempfile.TemporaryDirectory(prefix="bench_encoder_fit_") if args.fit else None
    fit_inputs = Path(scratch.name) / "fit_inputs.pt" if scratch else None
    fit_about = save_fit_inputs(sam, rgb, args.fit_mask, fit_inputs) if args.fit else {}
    load_before = os.getloadavg()[0]
    wall: Dict[str, List[float]] = {v: [] for v in variants}
    cpu: Dict[str, List[float]] = {v: [] for v in variants}
    first: Dict[str, List[torch.Tensor]] = {}
    with torch.inference_mode():
        for _ in tqdm(range(args.runs), desc=f"{args.model} {'/'.join(variants)} rounds", unit="round",
                      file=sys.stderr):
            for variant in variants:
                with set_variant(sam, variant):
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = sam.image_encoder(x)
                    wall[variant].append(time.perf_counter() - t0)
                    cpu[variant].append(time.process_time() - c0)
                first.setdefault(variant, [t.float() for t in outputs(out)])
            for name, checkout in fits.items():
                fit_runs[name].append({**time_fit(checkout, fit_inputs, args.fit_iterations),
                                       "checkout": str(checkout)})
    if scratch:
        scratch.cleanup()
    load_after = os.getloadavg()[0]
    memory = {} if args.skip_memory else {v: measure_memory(args, v) for v in variants}

    ref = first["stock"]
    result = {
        "model": args.model, "image": str(args.image), "input_shape": list(x.shape), "runs": args.runs,
        "seed": args.seed, "threads": torch.get_num_threads(), "cpu": cpu_info().to_dict(),
        "cpu_line": cpu_info().line(), "torch": torch.__version__,
        "loadavg_1min_before_after": [load_before, load_after],
        "variants": {v: {"wall_s": wall[v], "cpu_s": cpu[v], "wall_median_s": statistics.median(wall[v]),
                         "cpu_median_s": statistics.median(cpu[v]),
                         "speedup_wall": statistics.median(wall["stock"]) / statistics.median(wall[v]),
                         "speedup_cpu": statistics.median(cpu["stock"]) / statistics.median(cpu[v]),
                         "max_abs_diff_embeddings": float((first[v][0] - ref[0]).abs().max()),
                         "rel_error_embeddings": rel_error(first[v][0], ref[0]),
                         "max_abs_diff_interm_embeddings": max((float((a - b).abs().max())
                                                                for a, b in zip(first[v][1:], ref[1:])), default=None),
                         "peak_rss_increase_mib": memory.get(v, {}).get("peak_rss_increase_mib")}
                     for v in variants},
        "memory_method": next(iter(memory.values()))["method"] if memory else None,
    }
    if args.fit:
        fit_about["iterations"] = args.fit_iterations
        result["fit"] = fit_summary(fit_runs, {"wall": statistics.median(wall["vos"]), "cpu": statistics.median(
            cpu["vos"])}, fit_about)
    if "vos_bf16" in variants:
        result["speedup_vos_bf16_over_vos_wall"] = (statistics.median(wall["vos"])
                                                    / statistics.median(wall["vos_bf16"]))
    print_table(result)
    if args.json:
        write_json(args.json, result)
    return 0


def print_table(r: Dict[str, object]) -> None:
    print(r["cpu_line"])
    print(f"model {r['model']}, input {tuple(r['input_shape'])} from {Path(r['image']).name}, {r['runs']} "
          f"alternating round(s), torch {r['torch']}, {r['threads']} thread(s), "
          "1-min load average %.2f before, %.2f after the timed runs" % tuple(r["loadavg_1min_before_after"]))
    print(f"{'variant':<11} {'wall median s':>14} {'CPU median s':>13} {'vs stock wall / CPU':>20} "
          f"{'max |Δ|':>9} {'rel. error':>10} {'peak RSS +MiB':>14}")
    for v, s in r["variants"].items():
        mem = "-" if s["peak_rss_increase_mib"] is None else f"{s['peak_rss_increase_mib']:.0f}"
        err = ("-", "-") if v == "stock" else (f"{s['max_abs_diff_embeddings']:.3g}",
                                               f"{s['rel_error_embeddings']:.2e}")
        speed = f"{s['speedup_wall']:.2f}x / {s['speedup_cpu']:.2f}x"
        print(f"{v:<11} {s['wall_median_s']:>14.2f} {s['cpu_median_s']:>13.2f} {speed:>20} {err[0]:>9} "
              f"{err[1]:>10} {mem:>14}")
    if "speedup_vos_bf16_over_vos_wall" in r:
        print(f"vos_bf16 over vos (fp32): {r['speedup_vos_bf16_over_vos_wall']:.2f}x wall")
    interm = {v: s["max_abs_diff_interm_embeddings"] for v, s in r["variants"].items()
              if v != "stock" and s["max_abs_diff_interm_embeddings"] is not None}
    if interm:
        print("max |Δ| of interm_embeddings vs stock: " + ", ".join(f"{v} {d:.3g}" for v, d in interm.items()))
    if r["memory_method"]:
        print(f"memory: one forward per variant in its own process; {r['memory_method']}")
    if "fit" in r:
        f = r["fit"]
        print(f"PerSAM-F fit, {f['iterations']} steps on {f['logits_shape'][1]}×{f['logits_shape'][2]} logits "
              f"({f['target_pixels']} target pixels), one per round in a child interpreter:")
        print(f"{'fit':<13} {'wall median s':>14} {'CPU median s':>13} {'vs vos encoder wall / CPU':>26}  checkout")
        for name, v in f["variants"].items():
            speed = f"{v['vs_vos_encoder_wall']:.3f}x / {v['vs_vos_encoder_cpu']:.3f}x"
            print(f"{name:<13} {v['wall_median_s']:>14.2f} {v['cpu_median_s']:>13.2f} {speed:>26}  {v['checkout']}")
        if "speedup_wall" in f:
            print(f"fit over fit_baseline: {f['speedup_wall']:.2f}x wall; learned weights differ by at most "
                  f"{f['max_abs_diff_weights']:.2g}")


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
