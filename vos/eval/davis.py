"""DAVIS 2017 semi-supervised evaluation, numerically identical to the official ``davis2017-evaluation``.

Metric (``shared/specs/davis_eval.md``): ground-truth void (255) becomes background; the objects are ids
``1..K`` with ``K`` = the largest id of the first ground-truth frame; the first and the last frame are not scored
(their prediction PNGs are never opened); objects are matched by id. Per frame and object: J = IoU (1 when both masks
are empty) and F = boundary F-measure (``seg2bmap`` boundaries, disk tolerance of radius ``ceil(0.008·diagonal)``).
Per object: Mean, Recall (> 0.5) and Decay of the per-frame values; global numbers average the per-object statistics
over every object of every sequence. Prediction sets the official script rejects (ids above ``K`` or 255 in a scored
frame, missing PNGs, size mismatch, RGB PNGs) raise :class:`vos.errors.EvaluationError`.

Arrays: label maps are ``uint8`` H×W indexed ``[row, col]``; masks are ``bool`` H×W. No torch import here.
"""
from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from vos.datasets.davis import VOID_ID, DavisDataset, DavisSequence
from vos.errors import EvaluationError, InputError, OutputError
from vos.eval.pool import ordered_map
from vos.io.atomic import atomic_write
from vos.io.paths import is_dir

BOUND_TH = 0.008
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


# ----------------------------------------------------------------------------------------------------------------
# Per-frame metrics


def boundary_radius(shape: tuple[int, int]) -> int:
    """Tolerance in pixels of an H×W image: ``ceil(0.008 * sqrt(H² + W²))`` (480×854 → 8, 1080×1920 → 18)."""
    return int(math.ceil(BOUND_TH * math.sqrt(shape[0] ** 2 + shape[1] ** 2)))


def disk_kernel(radius: int) -> np.ndarray:
    """``uint8`` (2r+1)×(2r+1) kernel: 1 at every offset (dx, dy) with dx² + dy² ≤ r²."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius).astype(np.uint8)


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """The official 1-px boundary of a binary H×W mask (``bool`` H×W).

    Pixel (row y, col x) is a boundary pixel when it differs from its right (y, x+1), lower (y+1, x) or lower-right
    (y+1, x+1) neighbour; neighbours outside the image are never compared, so the image border is not a boundary.
    """
    m = np.asarray(mask, dtype=bool)
    b = np.zeros_like(m)
    np.not_equal(m[:, :-1], m[:, 1:], out=b[:, :-1])
    b[:-1] |= m[:-1] != m[1:]
    b[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]
    return b


def _f_from_counts(n_fg: int, n_gt: int, fg_match: int, gt_match: int) -> float:
    """F from boundary pixel counts with the official conventions for empty boundaries."""
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0
    precision = fg_match / float(n_fg)
    recall = gt_match / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def roi_of(union: np.ndarray) -> Optional[tuple[slice, slice]]:
    """Rows/cols of the bounding box of ``union`` grown by 1 px (clipped), None if ``union`` is empty. Every boundary
    pixel of a mask inside ``union`` lies in the box, and inside it ``seg2bmap`` equals the whole-image result."""
    x, y, w, h = cv2.boundingRect(union.view(np.uint8))
    if w == 0:
        return None
    rows, cols = union.shape
    return slice(max(y - 1, 0), min(y + h + 1, rows)), slice(max(x - 1, 0), min(x + w + 1, cols))


def boundary_f_in_roi(gt: np.ndarray, pred: np.ndarray, kernel: np.ndarray) -> float:
    """F of two ``bool`` masks cropped to their ROI: boundaries outside it are empty and the dilation never needs
    pixels outside it to decide matches inside it, so the counts equal the whole-image ones."""
    b_gt, b_fg = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_fg = np.count_nonzero(b_gt), np.count_nonzero(b_fg)
    if n_gt == 0 or n_fg == 0:
        return _f_from_counts(n_fg, n_gt, 0, 0)
    gt_dil = cv2.dilate(b_gt.view(np.uint8), kernel).view(bool)
    fg_dil = cv2.dilate(b_fg.view(np.uint8), kernel).view(bool)
    return _f_from_counts(n_fg, n_gt, np.count_nonzero(b_fg & gt_dil), np.count_nonzero(b_gt & fg_dil))


def object_scores(gt: np.ndarray, pred: np.ndarray, kernel: np.ndarray) -> tuple[float, float]:
    """(J, F) of two ``bool`` H×W masks; ``kernel`` = ``disk_kernel(boundary_radius(shape))``.

    J = |G ∧ S| / |G ∨ S| (1 when both are empty); F = boundary F-measure. Both are computed on the ROI only.
    """
    union = gt | pred
    roi = roi_of(union)
    if roi is None:
        return 1.0, 1.0
    g, s = gt[roi], pred[roi]
    j = np.count_nonzero(g & s) / np.count_nonzero(union[roi])
    return j, boundary_f_in_roi(g, s, kernel)


def boundary_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """Boundary F-measure of two ``bool`` H×W masks with a disk tolerance of ``radius`` pixels."""
    roi = roi_of(gt | pred)
    return 1.0 if roi is None else boundary_f_in_roi(gt[roi], pred[roi], disk_kernel(radius))


def frame_scores(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> tuple[list[float], list[float]]:
    """J and F of objects ``1..num_objects`` for one frame (``uint8`` H×W label maps, void already background)."""
    kernel = disk_kernel(boundary_radius(pred.shape))
    scores = [object_scores(gt == k, pred == k, kernel) for k in range(1, num_objects + 1)]
    return [j for j, _ in scores], [f for _, f in scores]


# ----------------------------------------------------------------------------------------------------------------
# Per-object statistics


def decay_bin_edges(n: int) -> list[int]:
    """The official 5 bin edges for ``n`` values: ``uint8(round(linspace(1, n, 5) + 1e-10) - 1)`` (wraps at 256)."""
    return [int(v) % 256 for v in np.round(np.linspace(1, n, 5) + 1e-10) - 1]


@dataclass(frozen=True)
class Statistics:
    """Mean, Recall (fraction of values > 0.5) and Decay (mean of the first quarter bin minus the last one)."""

    mean: float
    recall: float
    decay: float


def statistics(values: Sequence[float]) -> Statistics:
    """Official per-object statistics of per-frame values (bins overlap by one frame; edges wrap like ``uint8``)."""
    v = np.asarray(values, dtype=np.float64)
    edges = decay_bin_edges(len(v))
    first = v[edges[0]:(edges[1] + 1) % 256]
    last = v[edges[3]:(edges[4] + 1) % 256]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty slices give NaN, as officially
        return Statistics(float(np.nanmean(v)), float(np.nanmean(v > 0.5)),
                          float(np.nanmean(first) - np.nanmean(last)))


# ----------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class ObjectResult:
    """Per-frame ``J`` and ``F`` (float64, aligned with the sequence's scored frames) of object ``id``."""

    id: int
    J: np.ndarray
    F: np.ndarray

    @property
    def J_stats(self) -> Statistics:
        return statistics(self.J)

    @property
    def F_stats(self) -> Statistics:
        return statistics(self.F)


@dataclass
class SequenceResult:
    """One sequence: scored frame names (first and last excluded), largest predicted id, objects ``1..K``."""

    name: str
    frames: list[str]
    n_pred_ids: int
    objects: list[ObjectResult]


@dataclass
class DavisResult:
    """A whole evaluation: sequences in evaluation order and the global numbers (keys = ``GLOBAL_COLUMNS``)."""

    set: str
    sequences: list[SequenceResult]
    global_: dict[str, float]

    def object_rows(self) -> Iterator[tuple[str, ObjectResult]]:
        """(``<seq>_<k>``, object) in CSV order."""
        for seq in self.sequences:
            for obj in seq.objects:
                yield f"{seq.name}_{obj.id}", obj


def global_metrics(sequences: Iterable[SequenceResult]) -> dict[str, float]:
    """Average every per-object statistic over all objects of all sequences; J&F-Mean = (J-Mean + F-Mean) / 2."""
    columns: dict[str, list[float]] = {name: [] for name in GLOBAL_COLUMNS[1:]}
    for seq in sequences:
        for obj in seq.objects:
            for metric, stats in (("J", obj.J_stats), ("F", obj.F_stats)):
                columns[f"{metric}-Mean"].append(stats.mean)
                columns[f"{metric}-Recall"].append(stats.recall)
                columns[f"{metric}-Decay"].append(stats.decay)
    if not columns["J-Mean"]:
        raise EvaluationError("no object to evaluate: the first ground-truth frame of every sequence is empty")
    means = {name: float(np.mean(values)) for name, values in columns.items()}
    return {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2, **means}


# ----------------------------------------------------------------------------------------------------------------
# Reading one sequence


def prediction_path(results_dir: Path, sequence: DavisSequence, index: int) -> Path:
    """``<results>/<seq>/<frame>.png`` where ``<frame>`` is the ground-truth annotation stem."""
    return Path(results_dir) / sequence.name / f"{sequence.frame_names[index]}.png"


def scored_indices(sequence: DavisSequence) -> range:
    """Frames that are scored: all but the first and the last."""
    return range(1, len(sequence) - 1)


def check_predictions_exist(results_dir: Path, sequence: DavisSequence) -> None:
    """Reject a sequence whose prediction folder lacks the PNG of a scored frame (before decoding anything)."""
    folder = Path(results_dir) / sequence.name
    if not is_dir(folder, "prediction folder", EvaluationError):
        raise EvaluationError(f"{sequence.name}: no prediction folder {folder}")
    for index in scored_indices(sequence):
        path = prediction_path(results_dir, sequence, index)
        if not path.is_file():
            raise EvaluationError(f"{sequence.name}: prediction of frame {sequence.frame_names[index]} not found: "
                                  f"{path} (every frame but the first and the last needs a PNG named like its "
                                  f"annotation)")


def read_prediction(path: Path, sequence: str, num_objects: int, shape: tuple[int, int]) -> np.ndarray:
    """Decode a prediction PNG into a ``uint8`` H×W label map of ids ``0..num_objects``, or reject it."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            labels = np.asarray(img)
    except OSError as err:
        raise EvaluationError(f"{sequence}: cannot read prediction {path} ({err})") from err
    if labels.ndim != 2 or labels.dtype.kind not in "biu":
        raise EvaluationError(f"{sequence}: {path} is a mode-{mode} image; predictions must be palette or "
                              f"8-bit grayscale PNGs whose pixel values are object ids")
    if labels.shape != shape:
        raise EvaluationError(f"{sequence}: {path} is {labels.shape[1]}x{labels.shape[0]} but the ground truth is "
                              f"{shape[1]}x{shape[0]} (width x height)")
    top, bottom = int(labels.max()), int(labels.min())
    if top > num_objects or bottom < 0:
        what = "void (255)" if top == VOID_ID else f"object id {top if top > num_objects else bottom}"
        raise EvaluationError(f"{sequence}: {path} contains {what} but the first ground-truth frame has "
                              f"{num_objects} object(s), ids 1..{num_objects}")
    return labels.astype(np.uint8, copy=False)


def _ground_truth(sequence: DavisSequence, index: int, shape: Optional[tuple[int, int]]) -> np.ndarray:
    gt = sequence.label_map(index)
    if shape is not None and gt.shape != shape:
        raise EvaluationError(f"{sequence.name}: annotation {sequence.annotation_path(index)} is "
                              f"{gt.shape[1]}x{gt.shape[0]}, the first one is {shape[1]}x{shape[0]}")
    void = gt == VOID_ID
    return np.where(void, np.uint8(0), gt) if void.any() else gt


def evaluate_sequence(sequence: DavisSequence, results_dir: Path) -> SequenceResult:
    """Score one sequence: per-object per-frame J and F over the scored frames."""
    if len(sequence) < 3:
        raise EvaluationError(f"{sequence.name}: {len(sequence)} frame(s); the first and last are not scored, "
                              f"so nothing is left to evaluate")
    first = _ground_truth(sequence, 0, None)
    num_objects = int(first.max())
    indices = scored_indices(sequence)
    js = np.empty((num_objects, len(indices)))
    fs = np.empty((num_objects, len(indices)))
    n_pred_ids = 0
    for column, index in enumerate(indices):
        gt = _ground_truth(sequence, index, first.shape)
        pred = read_prediction(prediction_path(results_dir, sequence, index), sequence.name, num_objects, gt.shape)
        n_pred_ids = max(n_pred_ids, int(pred.max()))
        js[:, column], fs[:, column] = frame_scores(gt, pred, num_objects)
    objects = [ObjectResult(k + 1, js[k], fs[k]) for k in range(num_objects)]
    return SequenceResult(sequence.name, [sequence.frame_names[i] for i in indices], n_pred_ids, objects)


# ----------------------------------------------------------------------------------------------------------------
# Whole evaluation


def _evaluate_one(job: tuple[DavisSequence, Path]) -> SequenceResult:
    return evaluate_sequence(*job)


def evaluate_davis(davis_root, results_dir, set: str = "val", sequences: Optional[Sequence[str]] = None,
                   workers: int = 1, progress: bool = True, resolution: str = "480p") -> DavisResult:
    """Evaluate ``<results_dir>/<seq>/<frame>.png`` against a DAVIS 2017 root, as the official semi-supervised tool.

    ``sequences`` restricts (and orders) the sequences of ``ImageSets/2017/<set>.txt``. ``workers`` processes
    evaluate sequences in parallel; the output order is always the sequence order. Raises ``DatasetError`` for a
    bad DAVIS root and ``EvaluationError`` for a prediction set the official tool would reject.
    """
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    results_dir = Path(results_dir)
    if not is_dir(results_dir, "results folder", EvaluationError):
        raise EvaluationError(f"{results_dir}: results folder not found")
    dataset = DavisDataset(davis_root, set=set, resolution=resolution, only=sequences)
    for seq in dataset:
        if not seq.has_ground_truth:
            raise EvaluationError(f"{seq.annotation_dir}: only the first frame is annotated; cannot evaluate")
        check_predictions_exist(results_dir, seq)
    jobs = [(seq, results_dir) for seq in dataset]
    done = ordered_map(_evaluate_one, jobs, workers)
    if progress:
        from tqdm import tqdm

        done = tqdm(done, total=len(jobs), desc=f"DAVIS {set}", unit="seq", disable=None)  # None: only on a tty
    scored = list(done)
    return DavisResult(set, scored, global_metrics(scored))


# ----------------------------------------------------------------------------------------------------------------
# Reports


def _fmt(value: float) -> str:
    return "%.3f" % value


def global_csv_rows(result: DavisResult) -> list[list[str]]:
    """Header and the one row of ``global_results-<set>.csv``."""
    return [list(GLOBAL_COLUMNS), [_fmt(result.global_[name]) for name in GLOBAL_COLUMNS]]


def sequence_csv_rows(result: DavisResult) -> list[list[str]]:
    """Header and one ``<seq>_<k>, J-Mean, F-Mean`` row per object of ``per-sequence_results-<set>.csv``."""
    rows = [list(SEQUENCE_COLUMNS)]
    rows += [[name, _fmt(obj.J_stats.mean), _fmt(obj.F_stats.mean)] for name, obj in result.object_rows()]
    return rows


def write_csvs(result: DavisResult, out_dir, set: Optional[str] = None) -> tuple[Path, Path]:
    """Write ``global_results-<set>.csv`` and ``per-sequence_results-<set>.csv`` (the official bytes) atomically."""
    out_dir = Path(out_dir)
    name = result.set if set is None else set
    paths = out_dir / f"global_results-{name}.csv", out_dir / f"per-sequence_results-{name}.csv"
    for path, rows in zip(paths, (global_csv_rows(result), sequence_csv_rows(result))):
        atomic_write(path, lambda handle, rows=rows: csv.writer(handle, lineterminator="\n").writerows(rows),
                     binary=False)
    return paths


def format_table(result: DavisResult) -> str:
    """Both tables as aligned text, values with 3 decimals."""
    lines = ["  ".join(f"{c:>8}" for c in GLOBAL_COLUMNS), "  ".join(f"{result.global_[c]:>8.3f}" for c in
                                                                     GLOBAL_COLUMNS), ""]
    names = [name for name, _ in result.object_rows()]
    width = max(len(SEQUENCE_COLUMNS[0]), *map(len, names))
    lines.append(f"{SEQUENCE_COLUMNS[0]:<{width}}  {'J-Mean':>6}  {'F-Mean':>6}")
    lines += [f"{name:<{width}}  {obj.J_stats.mean:>6.3f}  {obj.F_stats.mean:>6.3f}"
              for name, obj in result.object_rows()]
    return "\n".join(lines)


def sequence_means(result: DavisResult) -> list[tuple[str, float, float]]:
    """(sequence, J-Mean, F-Mean) with each sequence's means averaged over its objects."""
    rows = []
    for seq in result.sequences:
        if seq.objects:
            rows.append((seq.name, float(np.mean([o.J_stats.mean for o in seq.objects])),
                         float(np.mean([o.F_stats.mean for o in seq.objects]))))
    return rows


def plot_sequences(result: DavisResult, path) -> Path:
    """Bar chart of per-sequence J&F (mean over the sequence's objects) with the global J&F as a line; PNG, atomic."""
    from matplotlib.figure import Figure

    rows = sequence_means(result)
    fig = Figure(figsize=(max(6.0, 0.45 * len(rows) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.bar([r[0] for r in rows], [(r[1] + r[2]) / 2 for r in rows], color="tab:blue")
    ax.axhline(result.global_["J&F-Mean"], color="tab:red", linestyle="--",
               label=f"global J&F {result.global_['J&F-Mean']:.3f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("J&F")
    ax.set_title(f"DAVIS 2017 {result.set}: per-sequence J&F")
    ax.tick_params(axis="x", labelrotation=90)
    ax.legend(loc="lower right")
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    return path


def evaluate_and_write(davis_root: Path, results: Path, out_dir: Path, set: str = "val",
                       sequences: Optional[Sequence[str]] = None, workers: int = 1, resolution: str = "480p",
                       progress: bool = True) -> tuple[DavisResult, list[Path]]:
    """Evaluate ``results``, then write both CSVs and the chart into ``out_dir``; returns the result and the files.
    Nothing is written unless the whole prediction set is accepted."""
    result = evaluate_davis(davis_root, results, set=set, sequences=sequences, workers=workers, progress=progress,
                            resolution=resolution)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot create output folder ({err})") from err
    csvs = write_csvs(result, out_dir, set)
    return result, [*csvs, plot_sequences(result, out_dir / f"per-sequence_JF-{set}.png")]
