"""``eval_perseg``: PerSAM / PerSAM-F on PerSeg, scored with pooled per-object mIoU, mAcc and bIoU.

Per object: reference = image and annotation ``--ref-idx`` (``00``), every other image is a test image. The raw RGB
annotation is passed to the engine (as the reference implementation does); predictions are written as
``<out>/pred/<object>/<stem>.png`` (PerSAM's dark red on black), each atomically, and an existing prediction is
never recomputed (resumable). Scoring pairs prediction and ground truth by stem at the original resolution
(``shared/specs/benchmarks.md`` §1-2) and writes ``<out>/perseg.json`` and ``<out>/perseg.md``.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from tqdm import tqdm

from vos.cli.common import add_model_args, model_from_args
from vos.datasets.perseg import PerSegObject, load_perseg, read_binary_mask
from vos.io.images import read_rgb
from vos.errors import DatasetError, EvaluationError, InputError
from vos.eval.iou import AGGREGATES, PooledIoU
from vos.eval.report import check_run_settings, write_mask_png, write_report

METHODS = ("persam", "persam_f")
PRED_COLOR = (128, 0, 0)


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
    parser.add_argument("--method", choices=METHODS, default="persam",
                        help="persam (training-free) or persam_f (PerSAM-F: 1000 AdamW steps on the reference "
                             "before segmenting). Default: %(default)s")
    add_model_args(parser)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (predictions, results, run.json); a folder holding a run with other "
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


def make_engine(method: str, sam):
    """The PerSAM engine for ``method``."""
    from vos.persam import PerSAM, PerSAMF

    return PerSAMF(sam) if method == "persam_f" else PerSAM(sam)


def _test_stems(obj: PerSegObject, ref_idx: str) -> List[str]:
    if ref_idx not in obj.images:
        raise DatasetError(f"object {obj.name!r}: reference image {ref_idx!r} not found in "
                           f"{obj.images[obj.stems[0]].parent}")
    return [s for s in obj.stems if s != ref_idx]


def predict(objects: Sequence[PerSegObject], ref_idx: str, pred_dir: Path, args: argparse.Namespace) -> Tuple[int, int]:
    """Segment every test image without a prediction PNG; return ``(predicted, reused)``."""
    todo = [(obj, [s for s in _test_stems(obj, ref_idx) if not (pred_dir / obj.name / f"{s}.png").is_file()])
            for obj in objects]
    total = sum(len(_test_stems(obj, ref_idx)) for obj in objects)
    missing = sum(len(stems) for _, stems in todo)
    if missing == 0:
        return 0, total
    engine = make_engine(args.method, model_from_args(args))
    with tqdm(total=total, initial=total - missing, desc="PerSeg", unit="img", disable=args.no_progress) as bar:
        for obj, stems in todo:
            if not stems:
                continue
            bar.set_postfix_str(obj.name)
            engine.set_reference(read_rgb(obj.images[ref_idx]), read_rgb(obj.annotations[ref_idx]))
            if args.method == "persam_f":
                engine.fit()
            for stem in stems:
                result = engine.segment(read_rgb(obj.images[stem]))
                write_mask_png(pred_dir / obj.name / f"{stem}.png", result.mask, PRED_COLOR)
                bar.update(1)
    return missing, total - missing


def score(objects: Sequence[PerSegObject], ref_idx: str, pred_dir: Path, ratio: float) -> PooledIoU:
    """Pooled per-object scores of the predictions in ``pred_dir``, paired with the ground truth by stem."""
    meter = PooledIoU(ratio)
    for obj in objects:
        for stem in _test_stems(obj, ref_idx):
            pred_path = pred_dir / obj.name / f"{stem}.png"
            if not pred_path.is_file():
                raise EvaluationError(f"{pred_path}: prediction for test image {obj.name}/{stem} not found")
            gt, pred = read_binary_mask(obj.annotations[stem]), read_binary_mask(pred_path)
            if gt.shape != pred.shape:
                raise EvaluationError(f"{pred_path}: size {pred.shape[1]}×{pred.shape[0]} differs from the "
                                      f"annotation {obj.annotations[stem]} ({gt.shape[1]}×{gt.shape[0]}, W×H)")
            meter.add(obj.name, gt, pred)
    return meter


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.biou_ratio <= 0:
        raise InputError(f"--biou-ratio must be positive, got {args.biou_ratio}")
    root, out = Path(args.root), Path(args.out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objects = load_perseg(root)
    dataset_warnings = [str(w.message) for w in caught]
    for message in dataset_warnings:
        print(f"warning: {message}", file=sys.stderr)
    check_run_settings(out, {"tool": "eval_perseg", "root": str(root.resolve()), "method": args.method,
                             "model": args.model, "checkpoint": Path(args.checkpoint).name if args.checkpoint else None,
                             "random_weights": args.random_weights, "ref_idx": args.ref_idx})
    pred_dir = out / "pred"
    predicted, reused = predict(objects, args.ref_idx, pred_dir, args)
    meter = score(objects, args.ref_idx, pred_dir, args.biou_ratio)
    summary = meter.summary(args.biou_aggregate)
    protocol = {
        "dataset": "PerSeg", "root": str(root), "objects": len(objects), "test_images": summary["images"],
        "method": args.method, "model": args.model, "checkpoint": args.checkpoint,
        "random_weights": args.random_weights, "reference": f"image/mask {args.ref_idx} of each object (not scored)",
        "reference_mask": "raw RGB annotation passed to the engine",
        "pairing": "prediction and ground truth paired by file stem",
        "binarisation": "foreground iff round(0.299R + 0.587G + 0.114B) > 0, GT and prediction",
        "resolution": "original image resolution",
        "mIoU": "per object ΣI/ΣU over its test images, mean over objects",
        "mAcc": "per object ΣI/Σ|GT|, mean over objects",
        "biou_ratio": args.biou_ratio, "biou_aggregate": args.biou_aggregate,
        "biou_band": "inner band: mask pixels within chessboard distance d of a non-mask pixel (outside = "
                     "non-mask), d = max(1, round(ratio * sqrt(H^2 + W^2)))",
        "biou_empty": "per image: both bands empty = 1, one empty = 0; pooled: empty bands add 0",
    }
    rows = [(s.name, s.images, 100 * s.iou, 100 * s.biou(args.biou_aggregate), 100 * s.acc)
            for s in meter.objects.values()]
    notes = [f"{predicted} predictions computed, {reused} reused from {pred_dir}",
             f"{summary['empty_band_images']} test images had an empty GT or predicted boundary band"]
    notes += [f"dataset warning: {m}" for m in dataset_warnings]
    json_path, md_path = write_report(out, "perseg", f"PerSeg — {args.method}", protocol, summary,
                                      ["object", "test images", "IoU", "bIoU", "Acc"], rows, notes)
    print(f"PerSeg {args.method}: mIoU {summary['mIoU']:.2f}  bIoU {summary['bIoU']:.2f} "
          f"(ratio {args.biou_ratio}, {args.biou_aggregate})  mAcc {summary['mAcc']:.2f}  "
          f"over {summary['objects']} objects, {summary['images']} test images")
    print(f"predicted {predicted}, reused {reused}")
    print(f"wrote {json_path}\nwrote {md_path}")
    return 0
