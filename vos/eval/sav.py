"""SA-V val/test evaluation, numerically identical to the official ``sav_dataset/sav_evaluator.py`` and
``sav_dataset/utils/sav_benchmark.py`` of facebookresearch/sam2.

Ground truth ``<gt_root>/<video>/<object>/<frame>.png`` (read by :mod:`vos.datasets.sav`); predictions in the same
layout, ``<results>/<video>/<object>/<frame>.png`` with the ground truth's file names (one binary PNG per object,
any 2-valued PNG, ``value > 0`` is the object; frames without ground truth, extra objects and extra videos are
ignored). Rules of the official tool:

* Per object, its annotated frames except the first and the last are scored. Counting starts at the first scored
  frame where the ground truth or the prediction is not empty; from then on every scored frame counts, also where
  both are empty (J = F = 1) or only the prediction is (J = F = 0).
* J = |G ∧ P| / |G ∨ P| (1 when both are empty); F = the DAVIS boundary F-measure with a disk tolerance of radius
  ``ceil(0.008·‖(H, W)‖)`` (``object_scores`` of :mod:`vos.eval.davis`, the same formulas and edge cases).
* Object J (F) = 100 × the mean over its counted frames; global J (F) = the mean over every object of every video
  (pooled, not per video); J&F = (J + F) / 2, for the global line and for each object.
* ``results.csv``: a header, the global line and one line per object, values with one decimal (see
  :func:`results_csv`).

Where the official tool does something else than vos (it is run as ``sav_evaluator.py --gt_root GT --pred_root
PRED``; vos raises :class:`DatasetError` for the ground truth, :class:`EvaluationError` for the predictions, one
line naming the file, and writes nothing):

* a ground-truth video without a prediction folder: silently left out of every number (with ``--strict``: exit 1
  without output) → ``EvaluationError``. Predicted videos the ground truth lacks: ignored by both (``--strict``
  exits 1).
* a missing prediction PNG of a scored frame or a missing object folder, a prediction whose size differs from the
  ground truth (also an RGB PNG), a PNG with more than 2 distinct values: an ``AssertionError`` traceback from a
  worker process, exit 1, no ``results.csv`` → ``EvaluationError``. An unreadable PNG: a PIL traceback →
  ``EvaluationError``.
* a ground-truth object with no mask on any scored frame (at most 2 annotated frames, or present only on the first
  or the last one): ``AssertionError``, exit 1 → ``DatasetError``. No video folder at all: a ``TypeError`` →
  ``DatasetError``; no object at all (only empty video folders): a ``results.csv`` of ``nan``, exit 0 →
  ``DatasetError``.
* ``results.csv`` is written into the prediction root by the official tool, into ``out_dir`` by vos.
* the official tool's DAVIS-style layout (a video folder of multi-object label-map PNGs) is not evaluated
  (``DatasetError``), nor is its fallback from a root holding ``Annotations/`` to that folder.

Arrays: masks are ``bool`` H×W indexed ``[row, col]``. No torch import here.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vos.datasets.sav import SavDataset, SavObject, SavVideo, read_binary_mask
from vos.errors import DatasetError, EvaluationError, InputError, OutputError
from vos.eval.davis import boundary_radius, disk_kernel, object_scores
from vos.eval.pool import ordered_map
from vos.io.atomic import atomic_write
from vos.io.paths import is_dir

RESULTS_FILE = "results.csv"
GLOBAL_NAME = "Global score"



# ----------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class SavObjectResult:
    """One object: its folder name ``id``, the ``frames`` that count (file names) and per-frame ``J``, ``F``
    (float64 in [0, 1], aligned with ``frames``)."""

    id: str
    frames: list[str]
    J: np.ndarray
    F: np.ndarray

    @property
    def J_mean(self) -> float:
        """100 × mean J, the official per-object J."""
        return float(np.mean(self.J) * 100)

    @property
    def F_mean(self) -> float:
        """100 × mean F, the official per-object F."""
        return float(np.mean(self.F) * 100)


@dataclass
class SavVideoResult:
    """One video and its objects in the official order (sorted folder names)."""

    name: str
    objects: list[SavObjectResult]


@dataclass
class SavResult:
    """A whole evaluation: videos in sorted order and the global J, F, J&F (percent, unrounded)."""

    videos: list[SavVideoResult]
    J: float
    F: float
    JF: float


def global_scores(videos: Sequence[SavVideoResult]) -> SavResult:
    """Pool every object of every video: global J (F) = mean of the per-object J (F); J&F = (J + F) / 2."""
    objects = [obj for video in videos for obj in video.objects]
    if not objects:
        raise DatasetError("no object to evaluate: every ground-truth video folder is empty")
    j = float(np.array([o.J_mean for o in objects]).mean())
    f = float(np.array([o.F_mean for o in objects]).mean())
    return SavResult(list(videos), j, f, (j + f) / 2)


# ----------------------------------------------------------------------------------------------------------------
# Scoring


def read_prediction(path: Path, shape: tuple) -> np.ndarray:
    """Decode and binarise a prediction PNG (``bool`` H×W), or reject it (unreadable, not 2-valued, wrong size)."""
    mask = read_binary_mask(path, EvaluationError, "prediction")
    if mask.shape != shape:
        size = "x".join(map(str, (mask.shape[1], mask.shape[0], *mask.shape[2:])))
        raise EvaluationError(f"{path}: prediction is {size} but the ground truth is {shape[1]}x{shape[0]} "
                              f"(width x height)")
    return mask


def evaluate_object(obj: SavObject, pred_dir: Path) -> SavObjectResult:
    """Score one object against the PNGs of ``pred_dir`` (its prediction folder) on its scored frames."""
    frames: list[str] = []
    js: list[float] = []
    fs: list[float] = []
    kernels: dict = {}
    has_gt = False
    for frame in obj.frames[1:-1]:
        gt = obj.mask(frame)
        pred = read_prediction(pred_dir / frame, gt.shape)
        gt_present = bool(gt.any())
        has_gt |= gt_present
        if frames or gt_present or pred.any():
            if gt.shape not in kernels:
                kernels[gt.shape] = disk_kernel(boundary_radius(gt.shape))
            j, f = object_scores(gt, pred, kernels[gt.shape])
            frames.append(frame)
            js.append(j)
            fs.append(f)
    if not has_gt:
        raise DatasetError(f"{obj.folder}: the object's mask is empty on every scored frame (all annotated frames but "
                           f"the first and the last); the official tool fails on it")
    return SavObjectResult(obj.name, frames, np.asarray(js, dtype=np.float64), np.asarray(fs, dtype=np.float64))


def evaluate_video(video: SavVideo, results: Path) -> SavVideoResult:
    """Score every object of one video against ``<results>/<video>/<object>/``."""
    return SavVideoResult(video.name, [evaluate_object(obj, results / video.name / obj.name)
                                       for obj in video.objects])


def check_predictions_exist(video: SavVideo, results: Path) -> None:
    """Reject a video whose prediction folder, object folder or PNG of a scored frame is missing (before decoding)."""
    folder = results / video.name
    if not is_dir(folder, "prediction folder", EvaluationError):
        raise EvaluationError(f"{folder}: no prediction folder for video {video.name} (the official tool leaves such "
                              f"a video out unless --strict)")
    for obj in video.objects:
        pred_dir = folder / obj.name
        if not obj.frames[1:-1]:
            continue
        if not is_dir(pred_dir, "prediction folder", EvaluationError):
            raise EvaluationError(f"{pred_dir}: no prediction folder for object {obj.name} of video {video.name}")
        try:
            present = set(os.listdir(pred_dir))
        except OSError as err:
            raise EvaluationError(f"{pred_dir}: cannot list the predictions ({err.strerror or err})") from None
        missing = [frame for frame in obj.frames[1:-1] if frame not in present]
        if missing:
            raise EvaluationError(f"{pred_dir / missing[0]}: prediction not found ({len(missing)} scored frame(s) of "
                                  f"object {obj.name} of video {video.name} missing; every annotated frame but the "
                                  f"first and the last needs one)")


def _evaluate_job(job: tuple) -> SavVideoResult:
    return evaluate_video(*job)


def evaluate(gt_root: Path, results: Path, set: str | None = None, *, progress: bool = False,
             workers: int = 1) -> SavResult:
    """Evaluate ``<results>/<video>/<object>/<frame>.png`` against an SA-V ground-truth root, as the official tool.

    ``set``: None = every video folder of ``gt_root`` (what the official tool evaluates), or a video list file such
    as ``sav_val.txt`` (relative to the split folder, ``gt_root``'s parent). Every video must have predictions.
    """
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    results = Path(results)
    if not is_dir(results, "results folder", EvaluationError):
        raise EvaluationError(f"{results}: results folder not found")
    dataset = SavDataset(gt_root, set)
    videos = [dataset.video(name) for name in dataset.videos]
    for video in videos:
        check_predictions_exist(video, results)
    done: Iterator[SavVideoResult] = ordered_map(_evaluate_job, [(v, results) for v in videos], workers)
    if progress:
        from tqdm import tqdm

        done = tqdm(done, total=len(videos), desc="SA-V", unit="video", disable=None)  # None: only on a tty
    return global_scores(list(done))


# ----------------------------------------------------------------------------------------------------------------
# Reports


def results_csv(result: SavResult) -> str:
    """The official ``results.csv`` text: first column padded to the longest video name (at least
    ``Global score``), object names formatted with ``format(name, "03")``, values ``.1f`` (right-aligned to 4 on
    object lines)."""
    width = max(len(GLOBAL_NAME), *(len(video.name) for video in result.videos))
    lines = [f"{'sequence':<{width}},{'obj':>3}, {'J&F':>4}, {'J':>4}, {'F':>4}",
             f"{GLOBAL_NAME:<{width}},{'':>3}, {result.JF:.1f}, {result.J:.1f}, {result.F:.1f}"]
    for video in result.videos:
        for obj in video.objects:
            j, f = obj.J_mean, obj.F_mean
            lines.append(f"{video.name:<{width}},{obj.id:03}, {(j + f) / 2:>4.1f}, {j:>4.1f}, {f:>4.1f}")
    return "".join(line + "\n" for line in lines)


def write_outputs(result: SavResult, out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and write the official ``results.csv`` into it atomically; return its path."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot create the output folder ({err.strerror or err})") from None
    path = out_dir / RESULTS_FILE
    text = results_csv(result)
    atomic_write(path, lambda handle: handle.write(text), binary=False)
    return [path]


def format_table(result: SavResult) -> str:
    """The official console printout: the table of ``results.csv`` with spaces for commas, then the summary."""
    return (results_csv(result).replace(",", " ") + "\nSummary:\n"
            f"Global score: J&F: {result.JF:.1f} J: {result.J:.1f} F: {result.F:.1f}")
