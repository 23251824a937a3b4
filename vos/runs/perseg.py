"""PerSAM / PerSAM-F on PerSeg, scored with pooled per-object mIoU, mAcc and bIoU (``vos eval-perseg``).

Per object: reference = image and annotation ``ref_idx`` (``00``), every other image is a test image. The raw RGB
annotation is passed to the engine (as the reference implementation does); predictions are written as
``<out>/pred/<object>/<stem>.png`` (PerSAM's dark red on black), each atomically, and an existing prediction is
never recomputed (resumable; the folder is guarded by its settings file). Scoring pairs prediction and ground truth
by stem at the original resolution (``shared/specs/benchmarks.md`` §1-2) and writes ``<out>/perseg.json`` and
``<out>/perseg.md``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from vos.datasets.perseg import PerSegObject, load_perseg, read_binary_mask
from vos.errors import DatasetError, EvaluationError, InputError
from vos.eval.iou import PooledIoU
from vos.eval.report import write_mask_png, write_report
from vos.io.images import read_rgb
from vos.runs.folder import RunFolder
from vos.runs.options import ModelOptions

PRED_COLOR = (128, 0, 0)


@dataclass(frozen=True)
class PerSegRun:
    """``root``: PerSeg root (``Images/<object>/NN.jpg``, ``Annotations/<object>/NN.png``); ``out``: results;
    ``method``: ``persam`` or ``persam_f``; ``ref_idx``: stem of each object's reference (never scored);
    ``biou_ratio`` / ``biou_aggregate``: Boundary IoU band ratio and aggregation (``object`` or ``image``)."""

    root: Path
    out: Path
    method: str = "persam"
    model: ModelOptions = field(default_factory=ModelOptions)
    ref_idx: str = "00"
    biou_ratio: float = 0.02
    biou_aggregate: str = "object"

    def settings(self) -> dict:
        """What the predictions depend on (the scoring options do not: they may change between runs)."""
        return {"root": str(Path(self.root).resolve()), "method": self.method, **self.model.settings(),
                "ref_idx": self.ref_idx}


@dataclass
class PerSegResult:
    """``summary`` (mIoU, mAcc, bIoU in percent, counts), the report files, predictions computed and reused, and
    the dataset's warnings."""

    summary: Dict[str, float]
    json_path: Path
    md_path: Path
    predicted: int
    reused: int
    warnings: List[str]


def _test_stems(obj: PerSegObject, ref_idx: str) -> List[str]:
    if ref_idx not in obj.images:
        raise DatasetError(f"object {obj.name!r}: reference image {ref_idx!r} not found in "
                           f"{obj.images[obj.stems[0]].parent}")
    return [s for s in obj.stems if s != ref_idx]


def predict(objects: Sequence[PerSegObject], run: PerSegRun, pred_dir: Path, model=None,
            on_image: Optional[Callable[[str], None]] = None) -> Tuple[int, int]:
    """Segment every test image without a prediction PNG; return ``(predicted, reused)``."""
    from vos.methods import image_engine

    todo = [(obj, [s for s in _test_stems(obj, run.ref_idx) if not (pred_dir / obj.name / f"{s}.png").is_file()])
            for obj in objects]
    total = sum(len(_test_stems(obj, run.ref_idx)) for obj in objects)
    missing = sum(len(stems) for _, stems in todo)
    if missing == 0:
        return 0, total
    engine = image_engine(run.method, model if model is not None else run.model.load())
    for obj, stems in todo:
        if not stems:
            continue
        engine.set_reference(read_rgb(obj.images[run.ref_idx]), read_rgb(obj.annotations[run.ref_idx]))
        if run.method == "persam_f":
            engine.fit()
        for stem in stems:
            result = engine.segment(read_rgb(obj.images[stem]))
            write_mask_png(pred_dir / obj.name / f"{stem}.png", result.mask, PRED_COLOR)
            if on_image is not None:
                on_image(obj.name)
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


def count_test_images(run: PerSegRun) -> int:
    """How many test images the run scores (for a progress bar)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(len(_test_stems(obj, run.ref_idx)) for obj in load_perseg(run.root))


def evaluate_perseg(run: PerSegRun, model=None, on_image: Optional[Callable[[str], None]] = None) -> PerSegResult:
    """Predict what is missing, score everything, write the report."""
    if run.biou_ratio <= 0:
        raise InputError(f"--biou-ratio must be positive, got {run.biou_ratio}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objects = load_perseg(run.root)
    dataset_warnings = [str(w.message) for w in caught]
    out = Path(run.out)
    folder = RunFolder(out, "perseg", "continue")
    folder.plan(run.settings())
    folder.start(run.settings())
    folder.commit()
    pred_dir = out / "pred"
    predicted, reused = predict(objects, run, pred_dir, model, on_image)
    meter = score(objects, run.ref_idx, pred_dir, run.biou_ratio)
    summary = meter.summary(run.biou_aggregate)
    protocol = {
        "dataset": "PerSeg", "root": str(run.root), "objects": len(objects), "test_images": summary["images"],
        "method": run.method, "model": run.model.name, "checkpoint": run.model.checkpoint,
        "random_weights": run.model.random_weights,
        "reference": f"image/mask {run.ref_idx} of each object (not scored)",
        "reference_mask": "raw RGB annotation passed to the engine",
        "pairing": "prediction and ground truth paired by file stem",
        "binarisation": "foreground iff round(0.299R + 0.587G + 0.114B) > 0, GT and prediction",
        "resolution": "original image resolution",
        "mIoU": "per object ΣI/ΣU over its test images, mean over objects",
        "mAcc": "per object ΣI/Σ|GT|, mean over objects",
        "biou_ratio": run.biou_ratio, "biou_aggregate": run.biou_aggregate,
        "biou_band": "inner band: mask pixels within chessboard distance d of a non-mask pixel (outside = "
                     "non-mask), d = max(1, round(ratio * sqrt(H^2 + W^2)))",
        "biou_empty": "per image: both bands empty = 1, one empty = 0; pooled: empty bands add 0",
    }
    rows = [(s.name, s.images, 100 * s.iou, 100 * s.biou(run.biou_aggregate), 100 * s.acc)
            for s in meter.objects.values()]
    notes = [f"{predicted} predictions computed, {reused} reused from {pred_dir}",
             f"{summary['empty_band_images']} test images had an empty GT or predicted boundary band"]
    notes += [f"dataset warning: {m}" for m in dataset_warnings]
    json_path, md_path = write_report(out, "perseg", f"PerSeg — {run.method}", protocol, summary,
                                      ["object", "test images", "IoU", "bIoU", "Acc"], rows, notes)
    return PerSegResult(summary, json_path, md_path, predicted, reused, dataset_warnings)
