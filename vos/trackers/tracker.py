"""The frame-streaming multi-object tracker: one encoder pass per frame, all objects through each decoder pass."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from vos.errors import InputError, MaskError
from vos.persam import prior
from vos.persam.embedding import ImageEmbedding, check_image, encode_image
from vos.persam.video import VideoConfig, fit_object_weights, object_target, video_step
from vos.trackers.state import ObjectManager, ObjectState

METHODS = ("persam", "persam_f")


@dataclass
class FrameResult:
    """One tracked frame. ``index``: 0-based frame index (0 = the frame given to :meth:`Tracker.add_objects`);
    ``label_map``: ``uint8 H×W`` (0 = background, else object id); ``masks``: ``{id: bool H×W}`` (each object's
    region in the label map); ``scores``: ``{id: predicted IoU of its final mask}`` (NaN when not predicted)."""

    index: int
    label_map: np.ndarray
    scores: Dict[int, float] = field(default_factory=dict)

    @property
    def masks(self) -> Dict[int, np.ndarray]:
        return {obj_id: self.label_map == obj_id for obj_id in self.scores}

    @property
    def present(self) -> List[int]:
        """Ids with at least one pixel in the label map."""
        return [obj_id for obj_id in self.scores if (self.label_map == obj_id).any()]


def default_decoder_batch(device: torch.device) -> int:
    """Prompts per decoder call: 1 on CPU (measured faster there than batches), 16 on GPUs."""
    return 1 if device.type == "cpu" else 16


class Tracker:
    """Follows every object of a first-frame label map through a stream of frames (paper video mode by default).

    ``sam``: a ``segment_anything.modeling.Sam`` (or what ``vos.load_sam`` returns). ``method``: ``"persam_f"``
    (default; PerSAM-F weights trained per object on its first frame, 800 steps) or ``"persam"`` (training-free).

    Options beyond the paper (off by default):
    ``absence_threshold``: an object whose best final logit is below this value is reported absent in that frame;
    ``refind_lost``: an object absent from the previous label map is searched again with its location prior (top-k
    points, no box) instead of staying lost as in the paper.
    ``reproduce_reference_quirks``: training-free mode picks pass A's "largest" mask by area modulo 256, as the
    reference code does (needed to reproduce its outputs bit for bit; off = the true largest).
    """

    def __init__(self, sam: nn.Module, method: str = "persam_f", decoder_batch: Optional[int] = None,
                 reproduce_reference_quirks: bool = False, absence_threshold: Optional[float] = None,
                 refind_lost: bool = False, fit_iterations: int = 800):
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        self.sam = sam
        self.config = VideoConfig(method=method, reproduce_reference_quirks=reproduce_reference_quirks,
                                  fit_iterations=fit_iterations)
        self.decoder_batch = decoder_batch or default_decoder_batch(sam.device)
        self.absence_threshold = absence_threshold
        self.refind_lost = refind_lost
        self.objects = ObjectManager()
        self.index = -1
        self._last: Optional[tuple] = None     # (frame, embedding) of the latest frame, reused by add_object

    @property
    def object_ids(self) -> List[int]:
        return self.objects.ids

    def _embed(self, frame: np.ndarray) -> ImageEmbedding:
        """The frame's embedding; the latest frame's is reused (the encoder runs once per frame)."""
        check_image(frame, "frame")
        if self._last is not None and self._last[0].shape == frame.shape and np.array_equal(self._last[0], frame):
            return self._last[1]
        emb = encode_image(self.sam, frame)
        self._last = (frame.copy(), emb)
        return emb

    def add_objects(self, frame: np.ndarray, label_map: np.ndarray) -> FrameResult:
        """Start tracking every id of ``label_map`` (``uint8 H×W``, 0 = background) on ``frame`` (frame 0 when the
        tracker is new). Returns that frame's result (the given label map)."""
        label_map = np.asarray(label_map)
        ids = [int(i) for i in np.unique(label_map) if i != 0]
        if not ids:
            raise MaskError("the label map has no object (all pixels are 0)")
        if label_map.shape != frame.shape[:2]:
            raise MaskError(f"label map is {label_map.shape[1]}×{label_map.shape[0]} (W×H) but the frame is "
                            f"{frame.shape[1]}×{frame.shape[0]}")
        emb = self._embed(frame)
        self.index = max(self.index, 0)
        targets = {i: object_target(self.sam, emb, label_map == i, what=f"object {i}") for i in ids}  # checks all
        for obj_id in ids:
            self._start(emb, obj_id, label_map == obj_id, targets[obj_id])
        return FrameResult(self.index, label_map.astype(np.uint8), {i: 1.0 for i in ids})

    def add_object(self, frame: np.ndarray, obj_id: int, mask: np.ndarray) -> None:
        """Start tracking ``obj_id`` from its ``bool H×W`` mask in ``frame`` (the latest frame, or the first)."""
        mask = np.asarray(mask).astype(bool)
        if mask.shape != frame.shape[:2]:
            raise MaskError(f"mask of object {obj_id} is {mask.shape[1]}×{mask.shape[0]} (W×H) but the frame is "
                            f"{frame.shape[1]}×{frame.shape[0]}")
        if not mask.any():
            raise MaskError(f"object {obj_id} has an empty mask")
        emb = self._embed(frame)
        self.index = max(self.index, 0)
        self._start(emb, obj_id, mask, object_target(self.sam, emb, mask, what=f"object {obj_id}"))

    def _start(self, emb: ImageEmbedding, obj_id: int, mask: np.ndarray, target: torch.Tensor) -> None:
        """Register an object: PerSAM-F weights are trained here, on the frame it is added on."""
        weights = None
        if self.config.method == "persam_f":
            weights = fit_object_weights(self.sam, emb, target, mask, self.config).weights
        self.objects.add(ObjectState(obj_id, target, weights, prior.mask_box(mask), self.index))

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking ``obj_id`` (from the next frame on)."""
        self.objects.remove(obj_id)

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> FrameResult:
        """Track every object into the next frame (RGB ``uint8 H×W×3``)."""
        if not len(self.objects):
            raise InputError("no objects to track: call add_objects(first_frame, label_map) first")
        emb = self._embed(frame)
        self.index += 1
        states = list(self.objects)
        logits = torch.full((len(states),) + frame.shape[:2], -1.0, device=self.sam.device)
        scores = np.full(len(states), np.nan)
        groups = [([i for i, s in enumerate(states) if s.box is not None], True)]
        if self.refind_lost:
            groups.append(([i for i, s in enumerate(states) if s.box is None], False))
        for idx, with_box in groups:
            if not idx:
                continue
            out = video_step(self.sam, emb, torch.cat([states[i].target for i in idx]),
                             np.stack([states[i].box for i in idx]) if with_box else None, self.config,
                             None if self.config.method == "persam" else torch.stack([states[i].weights for i in idx]),
                             self.decoder_batch)
            logits[idx] = out.logits
            scores[idx] = out.scores.numpy()
        label_map = self._label_map(logits, [s.obj_id for s in states])
        for state, box in zip(states, prior.label_boxes(label_map, [s.obj_id for s in states]).values()):
            state.box = box
        return FrameResult(self.index, label_map, {s.obj_id: float(v) for s, v in zip(states, scores)})

    def _label_map(self, logits: torch.Tensor, ids: List[int]) -> np.ndarray:
        """Overlaps → the largest logit; background where every logit ≤ 0; ties → background, then lower id."""
        if self.absence_threshold is not None:
            absent = logits.flatten(1).max(1).values < self.absence_threshold
            logits[absent] = -1.0
        stack = torch.cat([torch.zeros((1,) + tuple(logits.shape[1:]), device=logits.device), logits]).cpu().numpy()
        return np.asarray([0] + ids, np.uint8)[stack.argmax(0)]

    def state_dict(self) -> dict:
        """What resuming needs besides the previous label map: method, options, per-object targets and weights."""
        return {"method": self.config.method, "index": self.index, "objects": [s.to_dict() for s in self.objects]}

    def load_state_dict(self, state: dict, previous_label_map: np.ndarray, index: Optional[int] = None) -> None:
        """Restore :meth:`state_dict`; the boxes come from ``previous_label_map``, the label map of frame ``index``
        (default: the index saved in the state), and tracking continues with frame ``index + 1``."""
        if state["method"] != self.config.method:
            raise InputError(f"saved tracker state is for method {state['method']!r}, not {self.config.method!r}")
        self.objects = ObjectManager()
        for d in state["objects"]:
            self.objects.add(ObjectState.from_dict(d, self.sam.device))
        self.index = int(state["index"] if index is None else index)
        for s, box in zip(self.objects, prior.label_boxes(previous_label_map, self.objects.ids).values()):
            s.box = box
