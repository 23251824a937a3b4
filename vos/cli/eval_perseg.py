"""``eval_perseg``: PerSAM / PerSAM-F on PerSeg, scored with pooled per-object mIoU, mAcc and bIoU (see
:mod:`vos.runs.perseg`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import add_model_args, model_options
from vos.eval.iou import AGGREGATES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval_perseg",
        description="Run PerSAM or PerSAM-F on every PerSeg object (reference = image/mask --ref-idx, every other "
                    "image a test image) and score the predictions: mIoU and mAcc pooled per object (ΣI/ΣU over the "
                    "object's test images, then the mean over objects) and Boundary IoU, at the original "
                    "resolution. Writes OUT/pred/<object>/<stem>.png, OUT/perseg.json and OUT/perseg.md; re-running "
                    "with the same OUT reuses every existing prediction.")
    parser.add_argument("--root", required=True, metavar="D",
                        help="PerSeg root holding Images/<object>/NN.jpg and Annotations/<object>/NN.png")
    parser.add_argument("--method", choices=("persam", "persam_f"), default="persam",
                        help="persam (training-free) or persam_f (PerSAM-F: 1000 AdamW steps on the reference "
                             "before segmenting). Default: %(default)s")
    add_model_args(parser)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (predictions, results, vos_run.json); a folder holding a run with other "
                             "method/model/reference settings is refused")
    parser.add_argument("--ref-idx", default="00", metavar="NN",
                        help="stem of each object's reference image and mask (never scored). Default: %(default)s")
    parser.add_argument("--biou-ratio", type=float, default=0.02, metavar="R",
                        help="Boundary IoU dilation ratio: band width d = round(R * image diagonal), at least 1 "
                             "pixel. Default: %(default)s (the COCO/LVIS setting of the Boundary IoU API)")
    parser.add_argument("--biou-aggregate", choices=AGGREGATES, default="object",
                        help="'object': pool boundary intersection and union over an object's test images, then "
                             "average objects (like mIoU); 'image': mean of per-image bIoU within each object, then "
                             "over objects. Default: %(default)s")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tqdm import tqdm

    from vos.runs.perseg import PerSegRun, count_test_images, evaluate_perseg

    args = build_parser().parse_args(argv)
    run = PerSegRun(Path(args.root), Path(args.out), args.method, model_options(args), args.ref_idx,
                    args.biou_ratio, args.biou_aggregate)
    with tqdm(total=count_test_images(run), desc="PerSeg", unit="img", disable=args.no_progress) as bar:
        result = evaluate_perseg(run, on_image=lambda name: (bar.set_postfix_str(name), bar.update(1)))
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    s = result.summary
    print(f"PerSeg {args.method}: mIoU {s['mIoU']:.2f}  bIoU {s['bIoU']:.2f} "
          f"(ratio {args.biou_ratio}, {args.biou_aggregate})  mAcc {s['mAcc']:.2f}  "
          f"over {s['objects']} objects, {s['images']} test images")
    print(f"predicted {result.predicted}, reused {result.reused}")
    print(f"wrote {result.json_path}\nwrote {result.md_path}")
    return 0
