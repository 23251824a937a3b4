"""MOSEv2 evaluation, numerically identical to the official ``MOSEv2/sam2_rcms/tools/score.py`` + ``metricsv2.py``
(``henghuiding/MOSE-api``): the same numbers and the same ``scores.txt`` and ``metrics.json``.

Layout: ground truth ``<gt_root>/meta.json`` + ``<gt_root>/Annotations/<vid>/<%05d>.png`` (see
:mod:`vos.datasets.mose`); predictions ``<results>/<vid>/<frame>.png`` with object ids as pixel values (palette or
8-bit grayscale). As officially, a results folder whose only non-hidden entry is a folder is read inside that folder
(a submission zip's top folder), except, in vos, when that folder is named like a video of the ground truth (the
official tool then looks for every video inside that video's folder and scores them all 0).

Rules (per video of ``Annotations/``, in ``os.listdir`` order, and per object of its meta entry, in meta order):
- frames ``1 .. length-2`` are scored (the official tool does it in chunks of 15 frames; chunking changes nothing);
- J = (|G∧P| + 1) / (|G∨P| + 1), so an absent object predicted absent scores 1 and a false positive of n pixels on an
  empty ground truth scores 1/(n+1);
- F_new: boundary F-measure (``seg2bmap`` boundaries, as DAVIS) with an adaptive disk radius
  ``r = min(ceil(0.1·√area_gt), 0.008·diag)`` (diag = √(H²+W²); an empty ground truth gives the cap). When
  ``r < 0.008·diag`` (small objects) F_new uses the disk of radius r and the legacy F the disk of radius
  ``ceil(0.008·diag)`` (DAVIS's F); otherwise both use the disk of the NON-ceiled radius ``0.008·diag``, a footprint
  of ``ceil(2r+1)`` offsets ``-r, -r+1, …`` (off-centre, even-sized when frac(r) < 0.5), so the legacy F of large
  objects is not DAVIS's F (on frames under ~44 px of diagonal the footprint is empty and identical masks get F = 1/6,
  as officially);
- disappear_J / disappear_F_new: the mean over the object's disappearance segments (maximal runs of frames whose
  ground truth is empty, except a run starting at the first scored frame) of the segment's mean J / F_new;
  reappear_*: the same over the runs of non-empty ground truth that follow an empty run (so a first appearance after
  the first scored frame counts as a reappearance); None for an object without such a segment;
- per object: J, F_new, F are the means over the scored frames; globally each value is the mean over all objects
  (disappear/reappear over the objects that have one; NaN when none has), ``J&F_new = (J + F_new) / 2``,
  ``J&F = (J + F) / 2``, and the outputs are ×100 rounded to 2 decimals with numpy's rounding.

A prediction video folder that is missing scores 0 for each of its objects (J, F_new, F; no disappear/reappear
score), exactly as the official tool (and the evaluation server) does; a video of fewer than 3 frames scores 0 the
same way. vos follows these official numbers (they are what the server reports) and lists such videos in
``Mosev2Result.missing_videos`` / ``format_table`` so that a forgotten video is not silent.

Rejected (``EvaluationError``; ``DatasetError`` for the ground truth), one line naming the file; where the official
tool does otherwise:
- a missing prediction frame: the official tool pairs frame k with the k-th file of the sorted prediction list, so a
  missing frame silently shifts which frames are scored (exit 0), or with too few files stops on an AssertionError;
  vos requires ``<frame>.png`` of every GT frame 0 .. length-2 (frame 0 is not decoded; the last frame is not
  needed and files after the end are ignored: the official pairing is then the by-name one);
- a prediction PNG whose name is not a number: official ValueError; a prediction of the wrong size: official
  ValueError (a 1×W or H×1 PNG is even broadcast silently); vos rejects;
- an object id in a scored prediction frame that is not an object of the video's meta (e.g. 255): the official tool
  ignores those pixels (exit 0); vos rejects, as such ids are a bug in the predictions;
- an RGB (or other non palette/grayscale) prediction: the official tool converts it to a web palette and scores the
  indices (exit 0); vos rejects;
- a missing or malformed ``meta.json``, an ``Annotations/`` entry not in the meta, a length that differs from the
  number of annotation files, an annotation of the wrong size: official crash; vos ``DatasetError``.
``metrics.json`` ends with ``total_time``, the summed compute time (the official value is its own run's time).

Arrays: label maps ``uint8`` H×W indexed [row, col]; masks ``bool`` H×W. No torch import here.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from vos.datasets.mose import MoseDataset, MoseVideo, list_folder
from vos.errors import DatasetError, EvaluationError, InputError
from vos.eval.davis import boundary_f_in_roi, roi_of
from vos.eval.pool import ordered_map
from vos.io.atomic import atomic_write
from vos.io.paths import is_dir, kind

OUTPUT_FILES = ("scores.txt", "metrics.json")
SUMMARY_KEYS = ("J&F_new", "J", "F_new", "disappear_J&F_new", "reappear_J&F_new", "F", "J&F")
BOUND_TH = 0.1  # adaptive width: 0.1·√area
CAP_TH = 0.008  # cap and legacy width: 0.008·diagonal


# ----------------------------------------------------------------------------------------------------------------
# Per-frame metrics


@cache
def disk_footprint(radius: float) -> np.ndarray:
    """``uint8`` footprint of a possibly non-integer ``radius`` r: offsets ``np.arange(-r, r + 1)`` on both axes
    (rows, cols), 1 where dy² + dx² ≤ r². For an integer r it is ``disk_kernel(r)``; otherwise it is off-centre and
    ``ceil(2r + 1)`` wide."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).astype(np.uint8)


def boundary_widths(shape: tuple[int, int], gt_area: int) -> tuple[float, float]:
    """(radius of F_new, radius of the legacy F) for an H×W frame and a ground-truth area in pixels."""
    cap = CAP_TH * math.sqrt(shape[0] ** 2 + shape[1] ** 2)
    adaptive = math.ceil(BOUND_TH * math.sqrt(gt_area)) if gt_area else cap
    adaptive = min(cap, adaptive)
    return (float(adaptive), float(math.ceil(cap))) if adaptive < cap else (cap, cap)


def object_frame_scores(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """(J, F_new, F) of two ``bool`` H×W masks of one object (see the module docstring)."""
    union = gt | pred
    roi = roi_of(union)
    if roi is None:
        return 1.0, 1.0, 1.0
    g, p = gt[roi], pred[roi]
    j = (np.count_nonzero(g & p) + 1) / (np.count_nonzero(union[roi]) + 1)
    r_new, r_old = boundary_widths(gt.shape, np.count_nonzero(g))
    f_new = boundary_f_in_roi(g, p, disk_footprint(r_new))
    f_old = f_new if r_old == r_new else boundary_f_in_roi(g, p, disk_footprint(r_old))
    return j, f_new, f_old


# ----------------------------------------------------------------------------------------------------------------
# Per-object values


def _runs(empty: np.ndarray) -> list[tuple[int, int, bool]]:
    """Maximal runs (start, end, is_empty) of a bool sequence."""
    change = np.flatnonzero(empty[1:] != empty[:-1]) + 1
    starts = [0, *change.tolist()]
    ends = [*change.tolist(), len(empty)]
    return [(s, e, bool(empty[s])) for s, e in zip(starts, ends)]


def segment_means(J: np.ndarray, F: np.ndarray, empty: np.ndarray
                  ) -> tuple[float | None, float | None, float | None, float | None]:
    """(disappear_J, disappear_F, reappear_J, reappear_F): means over the disappearance / reappearance segments (the
    runs of empty / non-empty ground truth not starting at the first scored frame) of their mean J and F."""
    out: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for start, end, is_empty in _runs(empty):
        if start > 0:
            out[is_empty].append((np.mean(J[start:end]), np.mean(F[start:end])))
    means: list[float | None] = []
    for segments in (out[True], out[False]):
        means += ([float(np.mean([s[0] for s in segments])), float(np.mean([s[1] for s in segments]))]
                  if segments else [None, None])
    return means[0], means[1], means[2], means[3]


@dataclass
class ObjectScores:
    """One object of one video. ``frames``: scored frame names; ``J``, ``F_new``, ``F`` (float64) and ``empty_gt``
    (bool) are aligned with them. ``scored`` is False for the official zero row (missing prediction video, or no
    scored frame): then every array is empty, ``j = f_new = f = 0`` and the segment values are None."""

    video: str
    key: str
    frames: list[str]
    J: np.ndarray
    F_new: np.ndarray
    F: np.ndarray
    empty_gt: np.ndarray
    scored: bool = True
    j: float = 0.0
    f_new: float = 0.0
    f: float = 0.0
    disappear_j: float | None = None
    disappear_f: float | None = None
    reappear_j: float | None = None
    reappear_f: float | None = None

    def __post_init__(self) -> None:
        if self.scored and len(self.J):
            self.j, self.f_new, self.f = (float(np.mean(a)) for a in (self.J, self.F_new, self.F))
            self.disappear_j, self.disappear_f, self.reappear_j, self.reappear_f = segment_means(
                self.J, self.F_new, self.empty_gt)
        else:
            self.scored = False

    @property
    def name(self) -> str:
        """``<video>_<id>``, the key of ``metrics.json``."""
        return f"{self.video}_{self.key}"


def zero_scores(video: str, key: str) -> ObjectScores:
    empty = np.zeros(0)
    return ObjectScores(video, key, [], empty, empty, empty, np.zeros(0, bool), scored=False)


@dataclass
class Mosev2Result:
    """A whole evaluation: objects in official order, the unrounded global means (fractions, not ×100; NaN for a
    segment mean no object has), the prediction videos that were missing (scored 0) and the compute time."""

    objects: list[ObjectScores]
    missing_videos: list[str] = field(default_factory=list)
    total_time: float = 0.0

    def _mean(self, attr: str) -> float:
        values = [getattr(o, attr) for o in self.objects if getattr(o, attr) is not None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no value: NaN, as officially
            return float(np.mean(values))

    @property
    def means(self) -> dict[str, float]:
        """Keys ``J``, ``F_new``, ``F``, ``disappear_J``, ``disappear_F_new``, ``reappear_J``, ``reappear_F_new``."""
        attrs = {"J": "j", "F_new": "f_new", "F": "f", "disappear_J": "disappear_j",
                 "disappear_F_new": "disappear_f", "reappear_J": "reappear_j", "reappear_F_new": "reappear_f"}
        return {key: self._mean(attr) for key, attr in attrs.items()}

    @property
    def summary(self) -> dict[str, float]:
        """The numbers of ``scores.txt`` (keys ``SUMMARY_KEYS``), ×100 and rounded to 2 decimals as officially."""
        m = self.means
        return {"J&F_new": _pct((m["J"] + m["F_new"]) / 2), "J": _pct(m["J"]), "F_new": _pct(m["F_new"]),
                "disappear_J&F_new": _pct((m["disappear_J"] + m["disappear_F_new"]) / 2),
                "reappear_J&F_new": _pct((m["reappear_J"] + m["reappear_F_new"]) / 2), "F": _pct(m["F"]),
                "J&F": _pct((m["J"] + m["F"]) / 2)}


def _pct(value: float | None):
    """``round(value * 100, 2)`` with numpy's rounding (the official values are numpy floats); None stays None."""
    return None if value is None else round(np.float64(value) * 100, 2)


# ----------------------------------------------------------------------------------------------------------------
# Predictions


def prediction_root(results: Path, videos: Sequence[str]) -> Path:
    """``results``, or its only non-hidden entry when that is a folder not named like a ground-truth video."""
    if not is_dir(results, "results folder", EvaluationError):
        raise EvaluationError(f"{results}: results folder not found")
    entries = [e for e in list_folder(results, "results folder", EvaluationError) if not e.startswith(".")]
    if len(entries) == 1 and entries[0] not in videos and is_dir(results / entries[0], "results folder",
                                                                   EvaluationError):
        return results / entries[0]
    return results


def _frame_number(name: str) -> int | None:
    """The official sort key of a prediction file name: ``int`` of the text before the first dot."""
    try:
        return int(name.split(".")[0])
    except ValueError:
        return None


def prediction_folder(root: Path, video: MoseVideo) -> Path | None:
    """The prediction folder of ``video`` (None when missing), after checking that the official pairing of scored
    frames with the sorted prediction files is the by-name one."""
    folder = root / video.name
    found = kind(folder, "prediction folder", EvaluationError)
    if found is None:
        return None
    if found != "dir":
        raise EvaluationError(f"{folder}: not a folder of prediction PNGs")
    names = [n for n in list_folder(folder, "prediction folder", EvaluationError)
             if not n.startswith(".") and n.endswith(".png")]
    numbers = {n: _frame_number(n) for n in names}
    bad = sorted(n for n, number in numbers.items() if number is None)
    if bad:
        raise EvaluationError(f"{folder / bad[0]}: prediction file name is not a frame number")
    ordered = sorted(names, key=numbers.__getitem__)
    stems = [n.split(".")[0] for n in ordered]
    present = set(names)
    for index in range(1, len(video) - 1):
        if index < len(stems) and stems[index] == video.frame_names[index] and f"{stems[index]}.png" in present:
            continue
        missing = [f for f in video.frame_names[:index + 1] if f"{f}.png" not in present]
        if missing:
            raise EvaluationError(f"{folder / (missing[0] + '.png')}: prediction frame not found (every frame but "
                                  f"the last needs a PNG named like its annotation)")
        first = next(i for i in range(index + 1) if stems[i] != video.frame_names[i])
        raise EvaluationError(f"{folder / ordered[first]}: unexpected prediction file before frame "
                              f"{video.frame_names[first]} (frames are paired with the sorted file list)")
    return folder


def read_prediction(path: Path, shape: tuple[int, int], allowed: np.ndarray) -> np.ndarray:
    """Decode a prediction PNG into a ``uint8`` H×W label map whose ids are all ``allowed`` (bool[256]), or reject."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            labels = np.asarray(img) if mode in ("P", "L") else None
    except OSError as err:
        raise EvaluationError(f"{path}: cannot read prediction PNG ({err})") from None
    if labels is None:
        raise EvaluationError(f"{path}: a mode-{mode} image; predictions must be palette or 8-bit grayscale PNGs "
                              f"whose pixel values are object ids")
    if labels.shape != shape:
        raise EvaluationError(f"{path}: {labels.shape[1]}x{labels.shape[0]} but the video is "
                              f"{shape[1]}x{shape[0]} (width x height)")
    counts = np.bincount(labels.ravel(), minlength=256)
    unknown = np.flatnonzero(counts[~allowed])
    if unknown.size:
        bad = int(np.flatnonzero(~allowed)[unknown[0]])
        raise EvaluationError(f"{path}: contains id {bad}, which is not an object of this video in meta.json")
    return labels


# ----------------------------------------------------------------------------------------------------------------
# One video


def _ground_truth(video: MoseVideo, index: int, shape: tuple[int, int]) -> np.ndarray:
    gt = video.label_map(index)
    if gt.shape != shape:
        raise DatasetError(f"{video.annotation_path(index)}: {gt.shape[1]}x{gt.shape[0]} but the video is "
                           f"{shape[1]}x{shape[0]} (width x height)")
    return gt


def evaluate_video(video: MoseVideo, folder: Path | None) -> tuple[list[ObjectScores], float]:
    """Scores of every object of ``video`` (``folder``: its checked prediction folder, None when missing) and the
    compute time in seconds."""
    start = time.perf_counter()
    indices = range(1, len(video) - 1)
    if folder is None or not indices:
        return [zero_scores(video.name, k) for k in video.object_keys], time.perf_counter() - start
    shape = video.size or video.label_map(0).shape
    allowed = np.zeros(256, bool)
    allowed[[0, *(i for i in video.object_ids if i < 256)]] = True
    n, ids = len(indices), video.object_ids
    values = np.empty((3, len(ids), n))
    empty = np.empty((len(ids), n), bool)
    for column, index in enumerate(indices):
        gt = _ground_truth(video, index, shape)
        pred = read_prediction(folder / f"{video.frame_names[index]}.png", shape, allowed)
        for row, obj in enumerate(ids):
            g = gt == obj
            empty[row, column] = not g.any()
            values[:, row, column] = object_frame_scores(g, pred == obj)
    frames = [video.frame_names[i] for i in indices]
    objects = [ObjectScores(video.name, key, frames, values[0, r].copy(), values[1, r].copy(), values[2, r].copy(),
                            empty[r].copy()) for r, key in enumerate(video.object_keys)]
    return objects, time.perf_counter() - start


def _evaluate_one(job: tuple[MoseVideo, Path | None]) -> tuple[list[ObjectScores], float]:
    return evaluate_video(*job)


def evaluate(gt_root: Path, results: Path, set: str | None = None, *, progress: bool = False,
             workers: int = 1) -> Mosev2Result:
    """Evaluate ``<results>/<vid>/<frame>.png`` against a MOSEv2 ground-truth root as the official ``score.py``.

    ``set`` must be None (the official tool has no split notion: it scores every video of ``Annotations/``).
    ``workers`` > 1 evaluates videos in a process pool (same results). Every prediction folder's file list is
    checked before any PNG is decoded.
    """
    if set is not None:
        raise InputError(f"MOSEv2 has no set to choose (got {set!r}): every video of Annotations/ is scored")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    dataset = MoseDataset(gt_root)
    root = prediction_root(Path(results), dataset.names)
    jobs = [(video, prediction_folder(root, video)) for video in dataset]
    done = ordered_map(_evaluate_one, jobs, workers)
    if progress:
        from tqdm import tqdm

        done = tqdm(done, total=len(jobs), desc="MOSEv2", unit="video")
    objects: list[ObjectScores] = []
    total = 0.0
    for scores, seconds in done:
        objects += scores
        total += seconds
    missing = [video.name for video, folder in jobs if folder is None]
    return Mosev2Result(objects, missing, total)


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def object_metrics(obj: ObjectScores) -> dict[str, object]:
    """The object's entry of ``metrics.json`` (×100, 2 decimals; the zero row keeps the official integer zeros)."""
    if not obj.scored:
        return {"J&F_new": 0.0, "J": 0, "F_new": 0, "disappear_J&F_new": None, "reappear_J&F_new": None, "F": 0,
                "J&F": 0.0}
    def pair(j: float | None, f: float | None) -> float | None:
        return None if j is None else _pct((j + f) / 2)

    return {"J&F_new": _pct((obj.j + obj.f_new) / 2), "J": _pct(obj.j), "F_new": _pct(obj.f_new),
            "disappear_J&F_new": pair(obj.disappear_j, obj.disappear_f),
            "reappear_J&F_new": pair(obj.reappear_j, obj.reappear_f), "F": _pct(obj.f),
            "J&F": _pct((obj.j + obj.f) / 2)}


def metrics_json(result: Mosev2Result) -> str:
    """The text of ``metrics.json``: ``{"<vid>_<id>": {...}, ..., "total_time": seconds}``, indent 4, no final
    newline."""
    data: dict[str, object] = {o.name: object_metrics(o) for o in result.objects}
    data["total_time"] = result.total_time
    return json.dumps(data, indent=4)


def summary_lines(result: Mosev2Result) -> list[str]:
    """The lines of ``scores.txt``: ``key: value`` then the one-decimal ``Copy-Paste`` line."""
    s = result.summary
    return [*(f"{k}: {s[k]}" for k in SUMMARY_KEYS), "Copy-Paste: " + ",".join(f"{s[k]:.1f}" for k in SUMMARY_KEYS)]


def write_outputs(result: Mosev2Result, out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and write ``scores.txt`` and ``metrics.json`` (official formatting) atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {"scores.txt": "".join(f"{line}\n" for line in summary_lines(result)), "metrics.json": metrics_json(result)}
    paths = []
    for name in OUTPUT_FILES:
        atomic_write(out_dir / name, lambda handle, text=texts[name]: handle.write(text), binary=False)
        paths.append(out_dir / name)
    return paths


def _cell(value: float | None):
    return "N/A" if value is None else _pct(value)


def format_table(result: Mosev2Result) -> str:
    """The official printout: one row per object (named by its video, as officially), then the summary lines;
    a note on missing prediction videos last."""
    lines = [(f"{'Video':<50}, {'J':>8}, {'F_new':>8}, {'F':>8}, {'disappear_J':>12}, {'disappear_F_new':>15}, "
             f"{'reappear_J':>11}, {'reappear_F_new':>14}")]
    for o in result.objects:
        lines.append(f"{o.video:>50}, {o.j * 100:>8.2f}, {o.f_new * 100:>8.2f}, {o.f * 100:>8.2f}, "
                     f"{_cell(o.disappear_j):>12}, {_cell(o.disappear_f):>15}, {_cell(o.reappear_j):>11}, "
                     f"{_cell(o.reappear_f):>14}")
    lines += summary_lines(result)
    if result.missing_videos:
        lines.append(f"note: no prediction folder for {len(result.missing_videos)} video(s), scored 0: "
                     f"{', '.join(result.missing_videos)}")
    return "\n".join(lines)
