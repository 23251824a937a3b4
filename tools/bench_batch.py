#!/usr/bin/env python
"""Benchmark the batch engines: throughput in frames per second of a whole batch with the local engine (one video
after another in this process, torch on every core) and with Ray (1 actor on every core; 2 actors on half the
cores each), for the tiny fixture model and for vit_b with seeded random weights (``--random-weights``: the compute
does not depend on the weight values; the masks are meaningless).

The batch: ``--videos`` real DAVIS sequences (davis-mini, else the repo's test frames), ``--frames`` frames each,
tracked with ``--method`` (default persam: the PerSAM-F fit would dominate a few frames). Each measurement is one
whole batch into a fresh folder, timed from the engine call to its summary: it includes loading the model (once per
actor for Ray, once for local), not starting the Ray cluster (one local cluster on 127.0.0.1 serves every Ray run;
its start time is reported apart). frames per second = frames tracked / wall seconds. The variants alternate in
every round (model by model, engine by engine) so that drifting machine load spreads over all of them; the report
gives the median of ``--runs`` rounds, every raw time, whether each engine wrote the PNG bytes of the local one (at
another torch thread count a few CPU kernels round differently), the CPU model and flags.

Usage: python tools/bench_batch.py [--runs 3] [--videos 4] [--frames 3] [--models tiny,vit_b] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vos.batch import BatchRun, davis_jobs, run_local  # noqa: E402
from vos.batch.ray import LOCAL_OBJECT_STORE, run_ray  # noqa: E402
from vos.machine import cpu_info, usable_cpus  # noqa: E402
from vos.runs import ModelOptions  # noqa: E402
from vos.trackers import TrackerOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "data" / "davis-mini"
FALLBACK = ROOT / "tests" / "data" / "davis_frames"
MODELS = {"tiny": ModelOptions("tiny", str(ROOT / "tests" / "data" / "persam_ref" / "weights" / "tiny_sam_public.pt"),
                               "cpu", "stock"),
          "vit_b": ModelOptions("vit_b", None, "cpu", "fast", random_weights=True)}
#: (label, engine, Ray workers)
VARIANTS = (("local", "local", 0), ("ray-1", "ray", 1), ("ray-2", "ray", 2))


def davis_root(folder: Path, videos: int, frames: int) -> Path:
    """A DAVIS root with the first ``frames`` frames of ``videos`` sequences."""
    source = MINI if MINI.is_dir() else FALLBACK
    names = sorted(p.name for p in (source / "JPEGImages" / "480p").iterdir())[:videos]
    for name in names:
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            (folder / kind / "480p" / name).mkdir(parents=True)
            for i in range(frames):
                shutil.copy(source / kind / "480p" / name / f"{i:05d}.{ext}", folder / kind / "480p" / name)
    (folder / "ImageSets" / "2017").mkdir(parents=True)
    (folder / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in names))
    return folder


def one_batch(jobs, batch: BatchRun, engine: str, workers: int) -> float:
    """Wall seconds of one whole batch; every video must be tracked."""
    start = time.perf_counter()
    if engine == "local":
        summary = run_local(jobs, batch)
    else:
        summary = run_ray(jobs, batch, workers=workers, cpus_per_worker=usable_cpus() // workers)
    wall = time.perf_counter() - start
    bad = [r for r in summary.results.values() if r is None or r.status != "done"]
    if bad:
        raise SystemExit(f"error: {bad[0]}")
    return wall


def pngs(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/[0-9]*.png"))}


def bench(args, work: Path) -> dict:
    import ray

    jobs = davis_jobs(davis_root(work / "davis", args.videos, args.frames))
    frames = len(jobs) * args.frames
    start = time.perf_counter()
    ray.init(address="local", num_cpus=usable_cpus(), include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="error", log_to_driver=False, object_store_memory=LOCAL_OBJECT_STORE)
    cluster_start = time.perf_counter() - start
    walls = {(m, label): [] for m in args.models for label, _, _ in VARIANTS}
    identical = {(m, label): True for m in args.models for label, _, _ in VARIANTS}
    try:
        for run in range(args.runs):
            for model in args.models:
                reference = None
                for label, engine, workers in VARIANTS:
                    out = work / f"{model}-{label}-{run}"
                    batch = BatchRun(out, tracker=TrackerOptions(method=args.method), model=MODELS[model])
                    walls[model, label].append(one_batch(jobs, batch, engine, workers))
                    print(f"round {run + 1}/{args.runs} {model} {label}: {walls[model, label][-1]:.1f} s", flush=True)
                    reference = pngs(out) if reference is None else reference
                    identical[model, label] &= pngs(out) == reference
                    shutil.rmtree(out)
    finally:
        ray.shutdown()
    results = {model: {label: {"median_wall_s": statistics.median(walls[model, label]),
                               "median_fps": frames / statistics.median(walls[model, label]),
                               "walls_s": walls[model, label],
                               "same_pngs_as_local": identical[model, label]} for label, _, _ in VARIANTS}
               for model in args.models}
    return {"frames_per_batch": frames, "videos": len(jobs), "frames_per_video": args.frames, "runs": args.runs,
            "method": args.method, "ray_cluster_start_s": cluster_start, "results": results}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="rounds of every variant (default 3; medians reported)")
    p.add_argument("--videos", type=int, default=4, help="videos per batch (default 4)")
    p.add_argument("--frames", type=int, default=3, help="frames per video, frame 0 included (default 3)")
    p.add_argument("--models", default="tiny,vit_b", help="comma-separated, of: " + ", ".join(MODELS))
    p.add_argument("--method", choices=("persam", "persam_f"), default="persam")
    p.add_argument("--json", type=Path, help="also write the report to this file")
    args = p.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or args.runs < 1 or args.videos < 1 or args.frames < 2:
        p.error(f"unknown model {unknown[0]}" if unknown else "--runs and --videos must be >= 1, --frames >= 2")
    torch.set_num_threads(usable_cpus())
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as work:
        report = {"cpu": cpu_info().to_dict(), "cores": usable_cpus(), "torch": torch.__version__,
                  **bench(args, Path(work))}
    import ray

    report["ray"] = ray.__version__
    print(json.dumps(report, indent=1))
    print("\n" + cpu_info().line())
    print(f"{report['videos']} videos x {report['frames_per_video']} frames, {args.method}, medians of "
          f"{args.runs} run(s); Ray cluster start {report['ray_cluster_start_s']:.1f} s (not counted)")
    print("\n| model | engine | median fps | median wall s | PNGs as local |\n|---|---|---|---|---|")
    for model, rows in report["results"].items():
        for label, row in rows.items():
            print(f"| {model} | {label} | {row['median_fps']:.2f} | {row['median_wall_s']:.1f} | "
                  f"{'same' if row['same_pngs_as_local'] else 'differ'} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
