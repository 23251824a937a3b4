"""Finding an object from a photo, measured on videos spliced from DAVIS sequences: the object is present, leaves
(frames of another sequence), and comes back.

A :class:`Splice` lists segments of DAVIS sequences; the reference object is object ``obj_id`` of ``sequence``
and is present exactly in the segments of that sequence (their annotations are its ground truth; frames of other
sequences have none of it). :func:`find_metrics` scores one tracked run of the spliced video:

- ``first_find``: frames from the first frame the object is present to the first frame it is found (None: never);
- ``false_positive_frames``: frames while it is away on which the run gives it pixels;
- ``refinds``: for each return after an absence, frames from its return to the first frame it has pixels again
  (None: not within the segment);
- ``j_present`` / ``f_present`` / ``jf_present``: DAVIS J and F (the official definitions, :mod:`vos.eval.davis`)
  averaged over the frames where it is present (a frame where it is missed scores 0).

No torch import: the tracking that produces the masks is the caller's (``tools/bench_find.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from vos.errors import DatasetError


@dataclass(frozen=True)
class Segment:
    """Frames ``start`` .. ``stop - 1`` of DAVIS sequence ``sequence``."""

    sequence: str
    start: int
    stop: int


@dataclass(frozen=True)
class Splice:
    """A spliced video: its ``segments`` in order, the reference object (``obj_id`` of ``sequence``) and the frame
    of that sequence the reference photo is taken from (``photo_frame``; it may lie outside every segment)."""

    name: str
    sequence: str
    obj_id: int
    photo_frame: int
    segments: Tuple[Segment, ...]

    def present(self) -> List[bool]:
        """Per frame of the spliced video: is the reference sequence shown (the object can be there)?"""
        return [seg.sequence == self.sequence for seg in self.segments for _ in range(seg.start, seg.stop)]


#: The default splices over davis-mini's human-annotated sequences: blackswan present, away (car-shadow), back.
DEFAULT_SPLICES = (
    Splice("swan-away-back", "blackswan", 1, 0,
           (Segment("blackswan", 5, 20), Segment("car-shadow", 0, 20), Segment("blackswan", 20, 50))),
    Splice("swan-late", "blackswan", 1, 0,
           (Segment("car-shadow", 20, 40), Segment("blackswan", 10, 40))),
    Splice("car-away-back", "car-shadow", 1, 39,
           (Segment("car-shadow", 0, 12), Segment("blackswan", 0, 15), Segment("car-shadow", 12, 30))),
)


def splice_frames(root, splice: Splice, resolution: str = "480p") -> Iterator[Tuple[Path, Optional[Path]]]:
    """``(JPEG, annotation PNG or None)`` of each frame of ``splice`` in a DAVIS root (the annotation of the
    reference sequence's frames only)."""
    root = Path(root)
    for seg in splice.segments:
        for i in range(seg.start, seg.stop):
            jpeg = root / "JPEGImages" / resolution / seg.sequence / f"{i:05d}.jpg"
            if not jpeg.is_file():
                raise DatasetError(f"{jpeg}: frame missing for the splice {splice.name!r}")
            png = root / "Annotations" / resolution / seg.sequence / f"{i:05d}.png"
            yield jpeg, png if seg.sequence == splice.sequence else None


def photo_paths(root, splice: Splice, resolution: str = "480p") -> Tuple[Path, Path]:
    """The reference photo and its annotation."""
    root = Path(root)
    name = f"{splice.photo_frame:05d}"
    return (root / "JPEGImages" / resolution / splice.sequence / f"{name}.jpg",
            root / "Annotations" / resolution / splice.sequence / f"{name}.png")


@dataclass
class FindResult:
    """The metrics of one run on one splice (module docstring), and the frame counts they come from."""

    splice: str
    frames: int
    present_frames: int
    first_find: Optional[int]
    false_positive_frames: int
    away_frames: int
    refinds: List[Optional[int]] = field(default_factory=list)
    j_present: float = 0.0
    f_present: float = 0.0
    jf_present: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def find_metrics(name: str, present: Sequence[bool], found: Sequence[bool], predicted: Sequence[np.ndarray],
                 truth: Sequence[Optional[np.ndarray]]) -> FindResult:
    """Score a run: per frame, ``present`` (the object can be there), ``found`` (a detection started tracking on
    it), ``predicted`` (``bool H×W``: the object's pixels in the run) and ``truth`` (``bool H×W`` where present,
    else None)."""
    from vos.eval.davis import boundary_f, boundary_radius

    n = len(present)
    if not (len(found) == len(predicted) == len(truth) == n):
        raise ValueError("present, found, predicted and truth must have one entry per frame")
    first_present = next((t for t in range(n) if present[t]), None)
    first_found = next((t for t in range(n) if found[t]), None)
    first_find = (None if first_present is None or first_found is None or first_found < first_present
                  else first_found - first_present)
    away = [t for t in range(n) if not present[t]]
    false_positives = sum(bool(predicted[t].any()) for t in away)
    refinds = []
    for t in range(1, n):
        if present[t] and not present[t - 1] and first_present is not None and t > first_present:
            end = next((u for u in range(t, n) if not present[u]), n)
            hit = next((u for u in range(t, end) if predicted[u].any()), None)
            refinds.append(None if hit is None else hit - t)
    j, f = [], []
    for t in range(n):
        if present[t]:
            gt, pred = truth[t], predicted[t]
            union = np.logical_or(gt, pred).sum()
            j.append(1.0 if union == 0 else float(np.logical_and(gt, pred).sum() / union))
            f.append(boundary_f(gt, pred, boundary_radius(gt.shape)))
    jm, fm = (float(np.mean(j)) if j else 0.0), (float(np.mean(f)) if f else 0.0)
    return FindResult(name, n, sum(present), first_find, false_positives, len(away), refinds, jm, fm, (jm + fm) / 2)
