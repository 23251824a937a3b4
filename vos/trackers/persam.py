"""The paper's video mode as a tracking engine: per-object PerSAM state, one step over all objects per frame.

Per object: a unit max+mean target from the frame it is started on and, for PerSAM-F, three mixture weights fitted
there (never updated, as in the paper); its box prompt is its tight box in the previous label map. Overlaps are
resolved by the largest logit (ties: background, then the lower id), as the paper's video script's argmax does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from vos.errors import InputError
from vos.models.sam_backend import ImageEmbedding, SamBackend, sam_backend
from vos.persam import prior
from vos.persam.video import VideoConfig, fit_object_weights, object_target, video_step
from vos.trackers.result import ObjectOutput, argmax_label_map


@dataclass
class ObjectState:
    """Everything the PerSAM engine knows about one object.

    ``target``: unit max+mean reference vector ``1×C``; ``weights``: PerSAM-F mixture ``(3,)`` (``None`` for
    training-free PerSAM); ``box``: tight box ``[x0, y0, x1, y1]`` of the object in the previous label map (pixels,
    inclusive), ``None`` when it is absent there; ``added_at``: the frame index it was started on.
    """

    target: torch.Tensor
    weights: Optional[torch.Tensor]
    box: Optional[np.ndarray]
    added_at: int


def default_decoder_batch(device: torch.device) -> int:
    """Prompts per decoder call: 1 on CPU (measured faster there than batches), 16 on GPUs."""
    return 1 if device.type == "cpu" else 16


class PersamEngine:
    """PerSAM / PerSAM-F video mode (``config.method``) on a SAM-family backend (:mod:`vos.trackers.engine`).

    Options beyond the paper (off by default): ``absence_threshold``: an object whose best final logit is below it
    is reported absent in that frame; ``refind_lost``: an object absent from the previous label map is searched again
    with its location prior (top-k points, no box) instead of staying lost.
    """

    def __init__(self, backend: SamBackend, config: VideoConfig, decoder_batch: Optional[int] = None,
                 absence_threshold: Optional[float] = None, refind_lost: bool = False):
        self.backend, self.config = backend, config
        self.decoder_batch = decoder_batch or default_decoder_batch(backend.device)
        self.absence_threshold, self.refind_lost = absence_threshold, refind_lost

    @property
    def method(self) -> str:
        return self.config.method

    def start(self, emb: ImageEmbedding, index: int, masks: Dict[int, np.ndarray]
              ) -> Dict[int, Tuple[ObjectState, ObjectOutput]]:
        """The objects ``{id: bool H×W mask}`` on the frame of ``emb`` (every mask is checked before any fit)."""
        targets = {i: object_target(self.backend, emb, m, what=f"object {i}") for i, m in masks.items()}
        started = {}
        for obj_id, mask in masks.items():
            weights = None
            if self.config.method == "persam_f":
                weights = fit_object_weights(self.backend, emb, targets[obj_id], mask, self.config).weights
            state = ObjectState(targets[obj_id], weights, prior.mask_box(mask), index)
            started[obj_id] = (state, ObjectOutput(torch.where(torch.as_tensor(mask), 1.0, -1.0), 1.0))
        return started

    @torch.no_grad()
    def step(self, emb: ImageEmbedding, index: int, states: Dict[int, ObjectState]) -> Dict[int, ObjectOutput]:
        """Every object on the frame of ``emb``: objects with a box go through the paper's passes together; lost
        objects stay lost (logits −1, score NaN) unless ``refind_lost``."""
        ids = list(states)
        objects = [states[i] for i in ids]
        logits = torch.full((len(ids),) + emb.original_size, -1.0, device=self.backend.device)
        scores = np.full(len(ids), np.nan)
        groups = [([k for k, s in enumerate(objects) if s.box is not None], True)]
        if self.refind_lost:
            groups.append(([k for k, s in enumerate(objects) if s.box is None], False))
        for idx, with_box in groups:
            if not idx:
                continue
            weights = None if self.config.method == "persam" else torch.stack([objects[k].weights for k in idx])
            out = video_step(self.backend, emb, torch.cat([objects[k].target for k in idx]),
                             np.stack([objects[k].box for k in idx]) if with_box else None, self.config, weights,
                             self.decoder_batch)
            logits[idx] = out.logits
            scores[idx] = out.scores.numpy()
        absent = np.zeros(len(ids), bool)
        if self.absence_threshold is not None:
            absent = (logits.flatten(1).max(1).values < self.absence_threshold).cpu().numpy()
        return {i: ObjectOutput(logits[k], float(scores[k]), absent=bool(absent[k])) for k, i in enumerate(ids)}

    def label_map(self, outputs: Dict[int, ObjectOutput]) -> np.ndarray:
        """Overlaps → the largest logit; background where every logit ≤ 0 or the object is reported absent; ties →
        background, then the lower id."""
        ids = sorted(outputs)
        logits = torch.stack([torch.full_like(outputs[i].logits, -1.0) if outputs[i].absent else outputs[i].logits
                              for i in ids])
        return argmax_label_map(logits, ids)

    def observe(self, states: Dict[int, ObjectState], label_map: np.ndarray) -> None:
        """Take each object's box prompt for the next frame from ``label_map`` (``uint8 H×W``)."""
        for obj_id, box in prior.label_boxes(label_map, list(states)).items():
            states[obj_id].box = box

    def save(self, state: ObjectState) -> dict:
        """Plain tensors and numbers; the box comes back from the previous label map (:meth:`observe`)."""
        return {"target": state.target.cpu(), "added_at": state.added_at,
                "weights": None if state.weights is None else state.weights.cpu()}

    def load(self, saved: dict) -> ObjectState:
        device = self.backend.device
        weights = None if saved["weights"] is None else saved["weights"].to(device)
        return ObjectState(saved["target"].to(device), weights, None, int(saved["added_at"]))

    def settings(self) -> dict:
        return {"method": self.method}

    def check_settings(self, saved: dict) -> None:
        if saved.get("method") != self.method:
            raise InputError(f"the saved tracker state is for method {saved.get('method')!r}, not {self.method!r}")


def build_engine(backend, method: str, options) -> PersamEngine:
    """The engine of ``method`` (``persam`` / ``persam_f``) with ``options`` (:class:`~vos.trackers.TrackerOptions`;
    the SAM 2.1-only ones are refused)."""
    extra = options.sam2_options()
    if extra:
        raise InputError(f"option(s) {', '.join(sorted(extra))} apply to sam2, not to the PerSAM methods")
    config = VideoConfig(method=method, reproduce_reference_quirks=options.reproduce_reference_quirks,
                         fit_iterations=options.fit_iterations)
    return PersamEngine(sam_backend(backend), config, options.decoder_batch, options.absence_threshold,
                        options.refind_lost)
