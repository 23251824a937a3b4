"""The paper's video mode (spec §5) as pure step functions: (frame embedding, object states) → per-object logits.

Per object: a unit max+mean target from frame 0 (mask painted R = 215) and, for PerSAM-F, three mixture weights
trained on frame 0. Per frame, each object gets top-k positive points from its location confidence map, plus the
centre of its box prompt; the box prompt is its mask in the previous frame's label map, expanded by 10 px. Three
decoder passes follow (A: points + box; B: mask prompt; C: tight box + mask prompt). All objects of a frame go
through each pass together in batches of ``decoder_batch`` prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from vos.models.sam_backend import ImageEmbedding, SamBackend
from vos.persam import prior
from vos.persam.cascade import (Prompts, Refinement, boxes_of, decode_objects, non_empty, pick, refine_twice,
                                upscale_objects)
from vos.persam.finetune import FIT_THREADS, FitResult, fit_mask_weights, mix

#: Reference-mask value of the video scripts (``--exp 215``): a grid cell needs ≥ 3 of its 4 sampled pixels inside.
VIDEO_MASK_VALUE = 215
BOX_MARGIN = 10


@dataclass(frozen=True)
class VideoConfig:
    """Paper video-mode parameters. ``method``: ``"persam"`` (top-2 points, "largest" first mask) or ``"persam_f"``
    (top-1 point, learned mixture). ``reproduce_reference_quirks``: choose pass A's "largest" mask by pixel count
    modulo 256, as the reference's uint8 cast does (spec §5.1); off = the true largest. ``fit_threads``: torch
    threads while PerSAM-F fits (None: torch's setting)."""

    method: str = "persam"
    topk: Optional[int] = None
    box_margin: int = BOX_MARGIN
    reproduce_reference_quirks: bool = False
    fit_iterations: int = 800
    fit_lr: float = 4e-4
    fit_threads: Optional[int] = FIT_THREADS

    @property
    def num_points(self) -> int:
        return self.topk if self.topk is not None else (2 if self.method == "persam" else 1)


def object_target(backend: SamBackend, emb: ImageEmbedding, mask: np.ndarray, what: str = "object") -> torch.Tensor:
    """Unit max+mean target ``1×C`` of an object from its first-frame ``bool H×W`` mask (painted R = 215)."""
    mask_rgb = prior.reference_mask_rgb(mask, VIDEO_MASK_VALUE)
    grid = prior.grid_mask(backend, mask_rgb, tuple(emb.features.shape[-2:]))
    return prior.max_mean_target(prior.reference_cells(emb.features, grid, what))


def _prompts(sim: torch.Tensor, boxes: Optional[np.ndarray], k: int, margin: int):
    """Prompts (top-k points, plus the expanded box's centre when there are boxes; labels all 1) and expanded boxes
    ``B×4`` (``None`` without boxes) for B objects with tight ``boxes`` ``B×4``."""
    points = np.stack([prior.top_points(s, k) for s in sim])
    expanded = None
    if boxes is not None:
        pairs = [prior.expand_box(b, tuple(sim.shape[-2:]), margin) for b in boxes]
        expanded = np.stack([p[0] for p in pairs])
        points = np.concatenate([points, np.stack([p[1] for p in pairs])[:, None]], axis=1)
    return Prompts(points, np.ones(points.shape[:2], dtype=np.int64)), expanded


@torch.no_grad()
def fit_object_weights(backend: SamBackend, emb: ImageEmbedding, target: torch.Tensor, mask: np.ndarray,
                       config: VideoConfig, curve_points: Sequence[int] = (), trace: Optional[dict] = None
                       ) -> FitResult:
    """PerSAM-F video training on frame 0 (spec §5.2): top-1 point + box centre + expanded GT box, 3 outputs."""
    sim_grid, sim = prior.similarity(backend, target, prior.normalized_cells(emb.features), emb)
    prompts, boxes = _prompts(sim, prior.mask_box(mask)[None], 1, config.box_margin)
    out = backend.decode(emb, prompts.points, prompts.labels, boxes=boxes, multimask=True)
    logits = backend.upscale(emb, out.low_res)[0]
    if trace is not None:
        trace.update(train_sim_grid=sim_grid[0], points=prompts.points[0], box=boxes[0], scores=out.scores[0],
                     masks=logits > 0)
    return fit_mask_weights(logits, torch.as_tensor(mask), config.fit_iterations, config.fit_lr, curve_points,
                            config.fit_threads)


@dataclass
class StepOutput:
    """``logits``: final high-res logits ``B×H×W``; ``scores``: the decoder's predicted IoU of each final output."""

    logits: torch.Tensor
    scores: torch.Tensor


@torch.no_grad()
def video_step(backend: SamBackend, emb: ImageEmbedding, targets: torch.Tensor, boxes: Optional[np.ndarray],
               config: VideoConfig, weights: Optional[torch.Tensor] = None, decoder_batch: int = 1,
               trace: Optional[List[Dict]] = None) -> StepOutput:
    """One frame for B objects: final high-res logits ``B×H×W`` (object present where > 0) and scores ``B``.

    ``targets``: ``B×C`` unit targets; ``boxes``: ``B×4`` tight boxes ``[x0, y0, x1, y1]`` of the objects in the
    previous label map (the paper's box prompts, expanded by ``config.box_margin`` and with their centre as an extra
    point), or ``None`` for no box prompt (re-finding lost objects; an option beyond the paper);
    ``weights``: ``B×3`` PerSAM-F mixtures (``method="persam_f"``).
    Pass A (points + box, multimask) picks the first mask: the largest (PerSAM) or the learned mixture (PerSAM-F,
    falling back to the best-scored output when the mixture is empty, as the reference does); then the cascade of
    :mod:`vos.persam.cascade`.
    ``trace``: a list that receives one dict of intermediates per object (conformance checks).
    """
    n, everyone = len(targets), np.arange(len(targets))
    sim_grid, sim = prior.similarity(backend, targets, prior.normalized_cells(emb.features), emb)
    prompts, boxes = _prompts(sim, boxes, config.num_points, config.box_margin)
    a = decode_objects(backend, emb, prompts, everyone, boxes, None, decoder_batch)
    high_a = upscale_objects(backend, emb, a.low_res, decoder_batch)
    extra: Dict[str, object] = {}
    if config.method == "persam":
        areas = (high_a > 0).flatten(2).sum(-1).cpu().numpy()
        chosen_a = (areas.astype(np.uint8) if config.reproduce_reference_quirks else areas).argmax(1)
        first = high_a[torch.as_tensor(everyone), torch.as_tensor(chosen_a)]
        r = refine_twice(backend, emb, prompts, everyone, None, pick(a.low_res, chosen_a), first, decoder_batch)
    else:
        w = weights.reshape(n, 3).to(high_a)
        first = mix(high_a, w)[:, 0]
        chosen_a = (a.scores * w[:, :1]).cpu().numpy().argmax(1)    # reference: scores *= w0 (fallback only)
        fallback = ~(first > 0).flatten(1).any(1)
        first[fallback] = high_a[torch.as_tensor(everyone), torch.as_tensor(chosen_a)][fallback]
        alive = non_empty(first)
        box_b = boxes_of(first[alive] > 0)
        weighted_low = mix(a.low_res, w)
        extra = {"weighted_mask": first > 0, "fallback": fallback.cpu().numpy()}
        r = refine_twice(backend, emb, prompts, alive, box_b, weighted_low[alive], first, decoder_batch)
    if trace is not None:
        trace.extend(_trace(n, sim_grid, prompts, boxes, a, high_a, chosen_a, r, extra))
    return StepOutput(r.final, r.scores())


def _trace(n: int, sim_grid: torch.Tensor, prompts: Prompts, boxes: Optional[np.ndarray], a, high_a: torch.Tensor,
           chosen_a: np.ndarray, r: Refinement, extra: dict) -> List[Dict]:
    """Per-object intermediates of :func:`video_step`, named after the conformance fixtures' fields."""
    rows = []
    for j in range(n):
        t = {"sim_grid": sim_grid[j], "points": prompts.points[j], "box": None if boxes is None else boxes[j],
             "step1_scores": a.scores[j], "step1_masks": high_a[j] > 0, "step1_chosen": int(chosen_a[j]),
             "final_logits": r.final[j]}
        if extra:
            t.update(weighted_mask=extra["weighted_mask"][j], fallback_used=bool(extra["fallback"][j]))
        for name, p in (("step2", r.b), ("step3", r.c)):
            hit = np.nonzero(p.idx == j)[0]
            if len(hit):
                i = int(hit[0])
                t.update({f"{name}_scores": p.out.scores[i], f"{name}_chosen": int(p.chosen[i])})
                if p.boxes is not None:
                    t[f"{name}_box"] = p.boxes[i]
        rows.append(t)
    return rows
