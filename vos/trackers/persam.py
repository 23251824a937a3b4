"""The paper's video mode as a tracking engine: per-object PerSAM state, one step over all objects per frame.

Per object: a unit max+mean target from the frame it is added on and, for PerSAM-F, three mixture weights fitted
there (never updated, as in the paper); its box prompt is its tight box in the previous label map. Overlaps are
resolved by the largest logit (ties: background, then the lower id), as the paper's video script's argmax does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from vos.models.backend import ImageEmbedding, SamBackend
from vos.persam import prior
from vos.persam.video import VideoConfig, fit_object_weights, object_target, video_step
from vos.trackers.result import ObjectOutput, argmax_label_map
from vos.trackers.state import ObjectManager


@dataclass
class ObjectState:
    """Everything the PerSAM engine knows about one object.

    ``target``: unit max+mean reference vector ``1×C``; ``weights``: PerSAM-F mixture ``(3,)`` (``None`` for
    training-free PerSAM); ``box``: tight box ``[x0, y0, x1, y1]`` of the object in the previous label map (pixels,
    inclusive), ``None`` when it is absent there; ``added_at``: the frame index it was added on.
    """

    obj_id: int
    target: torch.Tensor
    weights: Optional[torch.Tensor]
    box: Optional[np.ndarray]
    added_at: int

    def to_dict(self) -> dict:
        """Plain tensors and numbers (loadable with ``torch.load(..., weights_only=True)``)."""
        return {"obj_id": self.obj_id, "target": self.target.cpu(), "added_at": self.added_at,
                "weights": None if self.weights is None else self.weights.cpu(),
                "box": None if self.box is None else torch.as_tensor(self.box)}

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> "ObjectState":
        return cls(int(d["obj_id"]), d["target"].to(device),
                   None if d["weights"] is None else d["weights"].to(device),
                   None if d["box"] is None else d["box"].numpy(), int(d["added_at"]))


def default_decoder_batch(device: torch.device) -> int:
    """Prompts per decoder call: 1 on CPU (measured faster there than batches), 16 on GPUs."""
    return 1 if device.type == "cpu" else 16


class PersamEngine:
    """PerSAM / PerSAM-F video mode (``config.method``) on a SAM-family backend.

    Options beyond the paper (off by default): ``absence_threshold``: an object whose best final logit is below it
    is reported absent in that frame; ``refind_lost``: an object absent from the previous label map is searched again
    with its location prior (top-k points, no box) instead of staying lost.
    """

    #: The per-object state is fixed once an object is added (its box comes from the previous label map).
    state_changes_every_frame = False

    def __init__(self, backend: SamBackend, config: VideoConfig, decoder_batch: Optional[int] = None,
                 absence_threshold: Optional[float] = None, refind_lost: bool = False):
        self.backend, self.config = backend, config
        self.decoder_batch = decoder_batch or default_decoder_batch(backend.device)
        self.absence_threshold, self.refind_lost = absence_threshold, refind_lost
        self.objects: ObjectManager[ObjectState] = ObjectManager()

    @property
    def method(self) -> str:
        return self.config.method

    def encode(self, frame: np.ndarray) -> ImageEmbedding:
        return self.backend.encode(frame)

    def add(self, emb: ImageEmbedding, index: int, masks: Dict[int, np.ndarray]) -> Dict[int, ObjectOutput]:
        """Start the objects ``{id: bool H×W mask}`` on the frame of ``emb`` (every mask is checked first)."""
        for obj_id in masks:
            self.objects.check_new(obj_id)
        targets = {i: object_target(self.backend, emb, m, what=f"object {i}") for i, m in masks.items()}
        outputs = {}
        for obj_id, mask in masks.items():
            weights = None
            if self.config.method == "persam_f":
                weights = fit_object_weights(self.backend, emb, targets[obj_id], mask, self.config).weights
            self.objects.add(obj_id, ObjectState(obj_id, targets[obj_id], weights, prior.mask_box(mask), index))
            logits = torch.where(torch.as_tensor(mask), 1.0, -1.0)
            outputs[obj_id] = ObjectOutput(logits, 1.0)
        return outputs

    def remove(self, obj_id: int) -> None:
        self.objects.remove(obj_id)

    @torch.no_grad()
    def step(self, emb: ImageEmbedding, index: int) -> Dict[int, ObjectOutput]:
        """Every object on the frame of ``emb``: objects with a box go through the paper's passes together; lost
        objects stay lost (logits −1, score NaN) unless ``refind_lost``."""
        states = list(self.objects)
        logits = torch.full((len(states),) + emb.original_size, -1.0, device=self.backend.device)
        scores = np.full(len(states), np.nan)
        groups = [([i for i, s in enumerate(states) if s.box is not None], True)]
        if self.refind_lost:
            groups.append(([i for i, s in enumerate(states) if s.box is None], False))
        for idx, with_box in groups:
            if not idx:
                continue
            weights = None if self.config.method == "persam" else torch.stack([states[i].weights for i in idx])
            out = video_step(self.backend, emb, torch.cat([states[i].target for i in idx]),
                             np.stack([states[i].box for i in idx]) if with_box else None, self.config, weights,
                             self.decoder_batch)
            logits[idx] = out.logits
            scores[idx] = out.scores.numpy()
        return {s.obj_id: ObjectOutput(logits[i], float(scores[i])) for i, s in enumerate(states)}

    def label_map(self, outputs: Dict[int, ObjectOutput]) -> np.ndarray:
        """Overlaps → the largest logit; background where every logit ≤ 0 (or the object is below the absence
        threshold); ties → background, then the lower id."""
        ids = sorted(outputs)
        logits = torch.stack([outputs[i].logits for i in ids])
        if self.absence_threshold is not None:
            absent = logits.flatten(1).max(1).values < self.absence_threshold
            logits = torch.where(absent[:, None, None], -1.0, logits)
        return argmax_label_map(logits, ids)

    def observe(self, label_map: np.ndarray) -> None:
        """Take each object's box prompt for the next frame from ``label_map`` (``uint8 H×W``)."""
        for state, box in zip(self.objects, prior.label_boxes(label_map, self.objects.ids).values()):
            state.box = box

    def state_dict(self) -> dict:
        """Method and per-object targets and weights; boxes come back from the previous label map."""
        return {"method": self.config.method, "objects": [s.to_dict() for s in self.objects]}

    def load_state_dict(self, state: dict, previous_label_map: np.ndarray) -> None:
        self.objects = ObjectManager()
        for d in state["objects"]:
            s = ObjectState.from_dict(d, self.backend.device)
            self.objects.add(s.obj_id, s)
        self.observe(previous_label_map)

    @property
    def ids(self) -> List[int]:
        return self.objects.ids
