"""LVOS v1/v2 semi-supervised evaluation, identical to the official ``lvos-evaluation`` (LingyiHongfd, commit
25cb02d), run on its pure-Python path: building its optional Cython boundary op changes F (it computes
``seg ^ (e | s | se)`` instead of ``(seg ^ e) | (seg ^ s) | (seg ^ se)``), so the Python path is the reference.

Scoring (layout in :mod:`vos.datasets.lvos`): per object of ``<set>_meta.json``, the frames of
``range(start, end, 5)`` but the first (see :meth:`FrameRange.scored`): every annotated frame but the object's
first and last. Ground truth = ``label == id`` (255 is not void here: it is background for every object); the
prediction ``<results>/<vid>/<frame>.png`` likewise. Per frame: J = IoU (1 when both masks are empty) and F =
boundary F-measure with a disk of radius ``ceil(0.008·diagonal)``, exactly DAVIS's
(:func:`vos.eval.davis.object_scores`).
Per object: J-Mean and F-Mean = mean over its ``frame_nums - 2`` values (NaN when there are none) and
V = ``sqrt(round(Σ(mean JF − JF)² / n, 4))`` with JF = (J + F) / 2 per frame, rounded (numpy's rounding) before the
square root. Per-sequence rows are named ``<vid>_<k>`` with ``k`` the object's 1-based position in the meta, not its
id. A video is unseen when its name is in :data:`vos.datasets.lvos_unseen.UNSEEN_VIDEOS` (the tool's own
``unseen_videos.txt``). Global: every mean is the average of a seen mean and an unseen mean over objects, e.g.
J&F = ((J_seen + F_seen) + (J_unseen + F_unseen)) / 4, so a split without unseen (or seen) objects gives NaN, and
one object with no scored frame makes its half NaN (plain means, not nanmeans). NaN is an empty CSV field.

Where vos differs (on input the official tool does not score): a missing prediction frame or video makes the tool
print ``<vid> frame <f> not found!`` and exit with status 0 without CSVs (with its default process pool it can
hang): vos raises :class:`EvaluationError`. A prediction of the wrong size or an RGB PNG crashes it with an
AssertionError: vos raises ``EvaluationError``. An id that is not an object of the video in the meta, in a frame
that is read, is silently ignored by the tool: vos rejects it (``EvaluationError``). Metas the tool crashes on
raise ``DatasetError``. The tool re-uses CSVs it finds in the results folder; vos always recomputes and writes into
its own output folder.

Arrays: label maps are H×W indexed ``[row, col]``; masks are ``bool`` H×W. No torch import here.
"""
from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vos.datasets.davis import read_label_map
from vos.datasets.lvos import LongVideo, LvosDataset, frame_name
from vos.datasets.lvos_unseen import UNSEEN_VIDEOS
from vos.errors import EvaluationError, InputError, OutputError
from vos.eval.davis import boundary_radius, disk_kernel, object_scores
from vos.eval.pool import ordered_map
from vos.io.atomic import atomic_write
from vos.io.paths import is_dir, is_file

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-seen-Mean", "J-unseen-Mean", "F-Mean", "F-seen-Mean", "F-unseen-Mean",
                  "V-Mean", "V-seen-Mean", "V-unseen-Mean")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean", "V-Mean")


# ----------------------------------------------------------------------------------------------------------------
# Per-object statistics


def _mean(values) -> float:
    """Mean of float64 values, NaN (without a warning) when there are none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.mean(np.asarray(values, dtype=np.float64)))


def temporal_variability(j: np.ndarray, f: np.ndarray) -> float:
    """V of one object: ``sqrt(round(Σ(mean(JF) − JF)² / n, 4))``, JF = (J + F) / 2 per slot; NaN when n = 0."""
    jf = (j + f) / 2
    if len(jf) == 0:
        return math.nan
    variance = np.sum((np.mean(jf) - jf) ** 2) / len(jf)
    return math.sqrt(float(np.round(variance, 4)))


@dataclass
class ObjectResult:
    """Object ``id`` of a video, CSV row ``row``. ``J`` and ``F`` hold its ``frame_nums - 2`` per-frame values
    (float64); ``frames[i]`` is the frame scored into slot ``i`` (slots past ``len(frames)`` keep 0, officially)."""

    id: int
    row: str
    frames: list[str]
    J: np.ndarray
    F: np.ndarray

    @property
    def J_mean(self) -> float:
        return _mean(self.J)

    @property
    def F_mean(self) -> float:
        return _mean(self.F)

    @property
    def V(self) -> float:
        return temporal_variability(self.J, self.F)


@dataclass
class VideoResult:
    """One video of the split: seen or unseen, objects in meta order."""

    name: str
    unseen: bool
    objects: list[ObjectResult]


@dataclass
class LvosResult:
    """A whole evaluation: videos in evaluation (sorted) order and the global numbers (keys = ``GLOBAL_COLUMNS``)."""

    set: str
    videos: list[VideoResult]
    global_: dict[str, float]

    def objects(self) -> Iterator[ObjectResult]:
        """Every object in CSV order."""
        for video in self.videos:
            yield from video.objects


def global_metrics(videos: Iterable[VideoResult]) -> dict[str, float]:
    """The official global numbers: per metric, the seen and unseen means over objects and their average."""
    halves: dict[str, dict[bool, list]] = {m: {False: [], True: []} for m in "JFV"}
    for video in videos:
        for obj in video.objects:
            for metric, value in (("J", obj.J_mean), ("F", obj.F_mean), ("V", obj.V)):
                halves[metric][video.unseen].append(value)
    seen = {m: _mean(halves[m][False]) for m in "JFV"}
    unseen = {m: _mean(halves[m][True]) for m in "JFV"}
    out = {"J&F-Mean": ((seen["J"] + seen["F"]) + (unseen["J"] + unseen["F"])) / 4.0}
    for m in "JFV":
        out.update({f"{m}-Mean": (seen[m] + unseen[m]) / 2, f"{m}-seen-Mean": seen[m], f"{m}-unseen-Mean": unseen[m]})
    return {name: out[name] for name in GLOBAL_COLUMNS}


# ----------------------------------------------------------------------------------------------------------------
# One video


def scored_frames(video: LongVideo) -> list[str]:
    """Names of the frames any object of ``video`` scores, in frame order (the only prediction PNGs read)."""
    numbers = {f for rng in video.ranges.values() for _, f in rng.scored()}
    return [frame_name(f) for f in sorted(numbers)]


def prediction_path(results: Path, video: str, frame: str) -> Path:
    """``<results>/<vid>/<frame>.png``."""
    return Path(results) / video / f"{frame}.png"


def check_predictions_exist(results: Path, video: LongVideo) -> None:
    """Reject a video whose prediction folder lacks the PNG of a scored frame (before decoding anything)."""
    frames = scored_frames(video)
    if not frames:
        return
    folder = Path(results) / video.name
    if not is_dir(folder, "prediction folder", EvaluationError):
        raise EvaluationError(f"{video.name}: no prediction folder {folder}")
    for frame in frames:
        path = prediction_path(results, video.name, frame)
        if not is_file(path, "prediction", EvaluationError):
            raise EvaluationError(f"{video.name}: prediction of frame {frame} not found: {path} (every annotated "
                                  f"frame an object scores needs a PNG named like its annotation)")


def read_prediction(path: Path, video: LongVideo, shape: tuple) -> np.ndarray:
    """Decode a prediction PNG into an H×W integer label map whose ids are objects of ``video`` (or 0)."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            labels = np.asarray(img)
    except OSError as err:
        raise EvaluationError(f"{video.name}: cannot read prediction {path} ({err})") from err
    if labels.ndim != 2 or labels.dtype.kind not in "biu":
        raise EvaluationError(f"{video.name}: {path} is a mode-{mode} image; predictions must be palette or "
                              f"8-bit grayscale PNGs whose pixel values are object ids")
    if labels.shape != shape:
        raise EvaluationError(f"{video.name}: {path} is {labels.shape[1]}x{labels.shape[0]} but the ground truth "
                              f"is {shape[1]}x{shape[0]} (width x height)")
    known = np.zeros(256, dtype=bool)
    known[[0, *video.ranges]] = True
    if int(labels.max()) > 255 or int(labels.min()) < 0 or not known[labels.astype(np.uint8)].all():
        bad = [int(v) for v in np.unique(labels) if not (0 <= v <= 255 and known[v])]
        raise EvaluationError(f"{video.name}: {path} contains object id {bad[0]}, which is not an object of this "
                              f"video in the meta file (objects: {', '.join(map(str, video.ranges))})")
    return labels


def evaluate_video(video: LongVideo, results: Path) -> VideoResult:
    """Score every object of one video on its scored frames (each ground-truth and prediction PNG read once)."""
    plans = {obj_id: rng.scored() for obj_id, rng in video.ranges.items()}
    by_frame: dict[int, list] = {}
    for obj_id, plan in plans.items():
        for slot, number in plan:
            by_frame.setdefault(number, []).append((obj_id, slot))
    js = {obj_id: np.zeros(rng.slots) for obj_id, rng in video.ranges.items()}
    fs = {obj_id: np.zeros(rng.slots) for obj_id, rng in video.ranges.items()}
    for number in sorted(by_frame):
        frame = frame_name(number)
        gt = read_label_map(video.annotation_path(frame))
        pred = read_prediction(prediction_path(results, video.name, frame), video, gt.shape)
        kernel = disk_kernel(boundary_radius(gt.shape))
        for obj_id, slot in by_frame[number]:
            js[obj_id][slot], fs[obj_id][slot] = object_scores(gt == obj_id, pred == obj_id, kernel)
    objects = [ObjectResult(obj_id, f"{video.name}_{k + 1}", [frame_name(f) for _, f in plans[obj_id]],
                            js[obj_id], fs[obj_id]) for k, obj_id in enumerate(video.ranges)]
    return VideoResult(video.name, video.name in UNSEEN_VIDEOS, objects)


# ----------------------------------------------------------------------------------------------------------------
# Whole evaluation


def _evaluate_job(job: tuple) -> VideoResult:
    return evaluate_video(*job)


def evaluate(gt_root: Path, results: Path, set: str | None = None, *, progress: bool = False,
             workers: int = 1) -> LvosResult:
    """Evaluate ``<results>/<vid>/<%08d>.png`` against the LVOS root ``gt_root`` and its ``<set>_meta.json``
    (``set``: ``valid``, the default, or ``test``). Raises ``DatasetError`` for a bad root or meta file and
    ``EvaluationError`` for a prediction set that is rejected (see the module docstring)."""
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    results = Path(results)
    if not is_dir(results, "results folder", EvaluationError):
        raise EvaluationError(f"{results}: results folder not found")
    dataset = LvosDataset(gt_root, "valid" if set is None else set)
    for video in dataset:
        check_predictions_exist(results, video)
    jobs = [(video, results) for video in dataset]
    done = ordered_map(_evaluate_job, jobs, workers)
    if progress:
        from tqdm import tqdm

        done = tqdm(done, total=len(jobs), desc=f"LVOS {dataset.set}", unit="video")
    videos = list(done)
    return LvosResult(dataset.set, videos, global_metrics(videos))


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def _fmt(value: float) -> str:
    """The official CSV number: ``%.3f``, NaN as an empty field (pandas' ``na_rep``)."""
    return "" if math.isnan(value) else f"{value:.3f}"


def global_csv_rows(result: LvosResult) -> list[list[str]]:
    """Header and the one row of ``global_results-<set>.csv``."""
    return [list(GLOBAL_COLUMNS), [_fmt(result.global_[name]) for name in GLOBAL_COLUMNS]]


def sequence_csv_rows(result: LvosResult) -> list[list[str]]:
    """Header and one ``<vid>_<k>, J-Mean, F-Mean, V-Mean`` row per object of ``per-sequence_results-<set>.csv``."""
    return [list(SEQUENCE_COLUMNS)] + [[o.row, _fmt(o.J_mean), _fmt(o.F_mean), _fmt(o.V)] for o in result.objects()]


def write_outputs(result: LvosResult, out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and write ``global_results-<set>.csv`` and ``per-sequence_results-<set>.csv`` (the
    official bytes), each atomically; returns their paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot create the output folder ({err.strerror or err})") from None
    paths = [out_dir / f"global_results-{result.set}.csv", out_dir / f"per-sequence_results-{result.set}.csv"]
    for path, rows in zip(paths, (global_csv_rows(result), sequence_csv_rows(result))):
        atomic_write(path, lambda handle, rows=rows: csv.writer(handle, lineterminator="\n").writerows(rows),
                     binary=False)
    return paths


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [" ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]


def format_table(result: LvosResult) -> str:
    """The official printout's two tables (global, per sequence) with the CSV's 3 decimals, NaN shown as NaN."""
    def show(value: float) -> str:
        return "NaN" if math.isnan(value) else f"{value:.3f}"

    lines = [f"--------------------------- Global results for {result.set} ---------------------------"]
    lines += _table(list(GLOBAL_COLUMNS), [[show(result.global_[c]) for c in GLOBAL_COLUMNS]])
    lines += ["", f"---------- Per sequence results for {result.set} ----------"]
    lines += _table(list(SEQUENCE_COLUMNS), [[o.row, show(o.J_mean), show(o.F_mean), show(o.V)]
                                             for o in result.objects()])
    return "\n".join(lines)
