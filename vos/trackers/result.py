"""What a tracking engine gives per object and what the tracker returns per frame."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch


def argmax_label_map(logits: torch.Tensor, ids: List[int]) -> np.ndarray:
    """``uint8 H×W`` label map of per-object logits ``K×H×W`` (object ``ids[k]`` is ``logits[k]``): each pixel goes
    to the largest logit, to the background where every logit is ≤ 0; ties: the background, then the lower index."""
    stack = torch.cat([torch.zeros((1,) + tuple(logits.shape[1:]), device=logits.device), logits]).cpu().numpy()
    return np.asarray([0] + list(ids), np.uint8)[stack.argmax(0)]


@dataclass
class ObjectOutput:
    """One object in one frame, from a tracking engine.

    ``logits``: ``float32 H×W`` tensor at frame resolution (the object is predicted where > 0); ``score``: the
    decoder's predicted IoU of that output (NaN when the object was not predicted in this frame); ``presence``: SAM 2's
    object-score logit (> 0: SAM 2 says the object is in the frame), None for PerSAM; ``absent``: the engine reports
    the object absent in this frame (SAM 2: object score ≤ 0, or below the absence threshold when one is set;
    PerSAM: best logit below the absence threshold), so it gets no pixel in the label map.
    """

    logits: torch.Tensor
    score: float
    presence: Optional[float] = None
    absent: bool = False


#: The two states of an object (:class:`ObjectStatus`).
SEARCHING, TRACKING = "searching", "tracking"


@dataclass(frozen=True)
class ObjectStatus:
    """An object in one frame: ``state`` :data:`SEARCHING` (it has references and is looked for; its mask is empty)
    or :data:`TRACKING`; ``score``: the detector's score in [0, 1] where it ran on this frame (None where it did not);
    ``found``: a detection started (or restarted) tracking on this frame."""

    state: str
    score: Optional[float] = None
    found: bool = False

    def to_json(self) -> dict:
        return {"state": self.state, "score": self.score, "found": self.found}

    @classmethod
    def from_json(cls, d: dict) -> "ObjectStatus":
        return cls(d["state"], d["score"], d["found"])

    @property
    def note(self) -> str:
        """``found``, ``searching 0.12``, ``tracking``: the object's state (and score) in a few characters."""
        return ("found" if self.found else self.state) + ("" if self.score is None else f" {self.score:.2f}")


def finding(states: Dict[int, "ObjectStatus"]) -> bool:
    """Whether a frame's states come from a run with objects to find (some object searched for or found)."""
    return any(s.state == SEARCHING or s.score is not None or s.found for s in states.values())


@dataclass
class FrameResult:
    """One tracked frame. ``index``: 0-based frame index (0 = the first frame given to :meth:`Tracker.add_objects`);
    ``label_map``: ``uint8 H×W`` (0 = background, else object id); ``scores``: ``{id: predicted IoU of its output}``
    (NaN when not predicted); ``logits``: ``{id: float32 H×W}`` per-object logits at frame resolution, before the
    objects are merged into the label map (on the frame an object is started from a mask: PerSAM gives +1 inside the
    mask and −1 outside, SAM 2 its logits of the mask input); ``presence``: ``{id: object-score logit}`` (SAM 2 only;
    an object SAM 2 scores absent, presence ≤ 0, has no pixel in the label map); ``states``: ``{id:``
    :class:`ObjectStatus` ``}`` for every object of the tracker, tracked or searched for (scores, logits and
    presence cover the tracked ones only); ``absent``: tracked ids the engine reports absent in this frame."""

    index: int
    label_map: np.ndarray
    scores: Dict[int, float] = field(default_factory=dict)
    logits: Dict[int, np.ndarray] = field(default_factory=dict)
    presence: Dict[int, float] = field(default_factory=dict)
    states: Dict[int, ObjectStatus] = field(default_factory=dict)
    absent: List[int] = field(default_factory=list)

    @property
    def object_masks(self) -> Dict[int, np.ndarray]:
        """``{id: bool H×W}``: each tracked object's own mask before the objects are merged (logits > 0; empty where
        the engine reports the object absent), so objects may overlap, as in SA-V's per-object predictions."""
        return {i: (np.zeros(lg.shape, bool) if i in self.absent else lg > 0) for i, lg in self.logits.items()}

    @property
    def masks(self) -> Dict[int, np.ndarray]:
        """``{id: bool H×W}``: each object's region in the label map (empty for an object being searched for)."""
        return {obj_id: self.label_map == obj_id for obj_id in self.states}

    @property
    def present(self) -> List[int]:
        """Ids with at least one pixel in the label map."""
        return [obj_id for obj_id in self.states if (self.label_map == obj_id).any()]
