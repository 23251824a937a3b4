"""Re-detection: find an object from reference photos on the tracking model's own features, and the per-object
search state (searching ↔ tracking) that decides when it is found, lost and found again.

The detector is training-free PerSAM (spec §2) on the frame's features, for every model family: the target is the
mean of the reference photos' embedding cells under their masks (each photo encoded once by the same backend; the
masks pooled onto the embedding grid as PerSAM's video scripts do, R = 215); its location confidence map gives a
positive and a negative point and the attention bias, the target embedding the semantic prompt; the mask decoder's
stage-1 pass and PerSAM's two refinement passes follow. No frame is encoded twice: the tracker's features of the
frame serve searching and tracking alike.

Detection score (in [0, 1]): ``clamp(peak, 0, 1) · clamp(iou, 0, 1)``, where ``peak`` is the highest cosine
similarity between the target and a cell of the frame (the location prior's confidence that the object is there
at all) and ``iou`` the decoder's predicted IoU of the final mask (its confidence in the mask); 0 when the final
mask is empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from vos.errors import MaskError
from vos.persam import prior
from vos.persam.persam import Reference, persam_segment
from vos.trackers.options import FindOptions
from vos.trackers.result import SEARCHING, TRACKING

#: Mask value of the reference grid (PerSAM's video scripts): a cell counts when ≥ about 57 % of it is the object.
REFERENCE_MASK_VALUE = 215
@dataclass
class Detection:
    """One search on one frame: ``score`` in [0, 1] (module docstring), its parts ``peak`` and ``iou``, and the final
    ``mask`` (``bool H×W``)."""

    score: float
    peak: float
    iou: float
    mask: np.ndarray


@dataclass
class ObjectSearch:
    """An object's references and search counters.

    ``cell_sum``: sum ``1×C`` of the reference cells of all its photos, ``cells``: their count, ``photos``: how many
    photos; ``state``: ``"searching"`` or ``"tracking"``; ``absent``: consecutive tracked frames on which it was
    reported absent; ``hits``: consecutive searched frames whose detection reached the threshold.
    """

    cell_sum: torch.Tensor
    cells: int
    photos: int
    state: str = SEARCHING
    absent: int = 0
    hits: int = 0

    def reference(self) -> Reference:
        """PerSAM's reference from all photos: the mean embedding (semantic prompt) and its unit vector (target)."""
        embedding = (self.cell_sum / self.cells)[None]
        return Reference(None, embedding, embedding[0] / embedding[0].norm(dim=-1, keepdim=True), None)

    def add_photo(self, cells: torch.Tensor) -> None:
        """Pool one more photo's reference cells ``N×C`` in."""
        self.cell_sum = self.cell_sum + cells.sum(0, keepdim=True)
        self.cells += len(cells)
        self.photos += 1

    def to_dict(self) -> dict:
        return {"cell_sum": self.cell_sum.cpu(), "cells": self.cells, "photos": self.photos, "state": self.state,
                "absent": self.absent, "hits": self.hits}

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> "ObjectSearch":
        return cls(d["cell_sum"].to(device), int(d["cells"]), int(d["photos"]), str(d["state"]), int(d["absent"]),
                   int(d["hits"]))


def reference_cells(backend, feats, mask: np.ndarray, what: str) -> torch.Tensor:
    """The embedding cells ``N×C`` of a photo's features under its ``bool H×W`` mask (a :class:`MaskError` when the
    mask covers no cell)."""
    grid = prior.grid_mask(backend, prior.reference_mask_rgb(mask, REFERENCE_MASK_VALUE),
                           tuple(feats.features.shape[-2:]))
    return prior.reference_cells(feats.features, grid, what)


@torch.no_grad()
def detect(backend, feats, search: ObjectSearch) -> Detection:
    """Training-free PerSAM for the object of ``search`` on a frame's features (module docstring)."""
    result = persam_segment(backend, search.reference(), feats)
    score = 0.0 if not result.mask.any() else min(max(result.peak, 0.0), 1.0) * min(max(result.score, 0.0), 1.0)
    return Detection(score, result.peak, result.score, result.mask)


@torch.no_grad()
def grid_peak(feats, search: ObjectSearch) -> float:
    """The highest cosine similarity between the references' unit target and a cell of the frame's ``1×C×h×w``
    features (the detector's ``peak`` before PerSAM upsamples the map; one ``C×(h·w)`` product)."""
    return float((search.reference().target @ prior.normalized_cells(feats.features)).max())


class Finder:
    """The state machine of objects with references (``options``: :class:`FindOptions`)."""

    def __init__(self, backend, options: Optional[FindOptions] = None):
        self.backend = backend
        self.options = options or FindOptions()

    def new_search(self, feats, mask: np.ndarray, what: str, tracking: bool) -> ObjectSearch:
        """An object's search state from its first photo (``feats``: the photo's features)."""
        cells = reference_cells(self.backend, feats, mask, what)
        search = ObjectSearch(torch.zeros_like(cells[:1]), 0, 0, TRACKING if tracking else SEARCHING)
        search.add_photo(cells)
        return search

    def detect(self, feats, search: ObjectSearch) -> Detection:
        return detect(self.backend, feats, search)

    def confirmed(self, search: ObjectSearch, detection: Detection) -> bool:
        """Count a searched frame; True when the object is found on it (then ``search`` turns to tracking)."""
        if detection.score >= self.options.detect_threshold and detection.mask.any():
            search.hits += 1
        else:
            search.hits = 0
        if search.hits < self.options.confirm_frames:
            return False
        search.state, search.hits, search.absent = TRACKING, 0, 0
        return True

    def verified(self, feats, search: ObjectSearch) -> bool:
        """Whether a tracked frame passes ``verify_threshold`` (always, when it is off): the references' similarity
        peak on the frame's embedding grid."""
        threshold = self.options.verify_threshold
        return threshold is None or grid_peak(feats, search) >= threshold

    def lost(self, search: ObjectSearch, present: bool) -> bool:
        """Count a tracked frame (``present``: the object has a pixel in the frame's label map and passed
        :meth:`verified`); True when it is lost after it (then ``search`` turns to searching, from the next frame
        on)."""
        search.absent = 0 if present else search.absent + 1
        if search.absent < self.options.lost_after:
            return False
        search.state, search.absent = SEARCHING, 0
        return True


def check_reference_mask(mask: np.ndarray, photo_size, what: str) -> np.ndarray:
    """A reference mask as ``bool H×W`` of the photo's ``(H, W)`` size, with at least one pixel."""
    mask = np.asarray(mask)
    if mask.shape[:2] != tuple(photo_size):
        raise MaskError(f"{what} is {mask.shape[1]}×{mask.shape[0]} (W×H) but its photo is "
                        f"{photo_size[1]}×{photo_size[0]}")
    if not mask.any():
        raise MaskError(f"{what} is empty")
    return mask.astype(bool)
