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
import torch.nn as nn

from vos.persam import prior
from vos.persam.decoder import DecoderOutput, decode, upscale
from vos.persam.embedding import ImageEmbedding
from vos.persam.finetune import FitResult, fit_mask_weights

#: Reference-mask value of the video scripts (``--exp 215``): a grid cell needs ≥ 3 of its 4 sampled pixels inside.
VIDEO_MASK_VALUE = 215
BOX_MARGIN = 10


@dataclass(frozen=True)
class VideoConfig:
    """Paper video-mode parameters. ``method``: ``"persam"`` (top-2 points, "largest" first mask) or ``"persam_f"``
    (top-1 point, learned mixture). ``reproduce_reference_quirks``: choose pass A's "largest" mask by pixel count
    modulo 256, as the reference's uint8 cast does (spec §5.1); off = the true largest."""

    method: str = "persam"
    topk: Optional[int] = None
    box_margin: int = BOX_MARGIN
    reproduce_reference_quirks: bool = False
    fit_iterations: int = 800
    fit_lr: float = 4e-4

    @property
    def num_points(self) -> int:
        return self.topk if self.topk is not None else (2 if self.method == "persam" else 1)


def object_target(sam: nn.Module, emb: ImageEmbedding, mask: np.ndarray, what: str = "object") -> torch.Tensor:
    """Unit max+mean target ``1×C`` of an object from its first-frame ``bool H×W`` mask (painted R = 215)."""
    mask_rgb = prior.reference_mask_rgb(mask, VIDEO_MASK_VALUE)
    grid = prior.grid_mask(sam, mask_rgb, tuple(emb.features.shape[-2:]))
    return prior.max_mean_target(prior.reference_cells(emb.features, grid, what))


def _prompts(sim: torch.Tensor, boxes: Optional[np.ndarray], k: int, margin: int):
    """Points ``B×N×2`` (top-k, plus the expanded box's centre when there are boxes), labels ``B×N`` (all 1) and
    expanded boxes ``B×4`` (``None`` without boxes) for B objects with tight ``boxes`` ``B×4``."""
    points = np.stack([prior.top_points(s, k) for s in sim])
    expanded = None
    if boxes is not None:
        pairs = [prior.expand_box(b, tuple(sim.shape[-2:]), margin) for b in boxes]
        expanded = np.stack([p[0] for p in pairs])
        points = np.concatenate([points, np.stack([p[1] for p in pairs])[:, None]], axis=1)
    return points, np.ones(points.shape[:2], dtype=np.int64), expanded


@torch.no_grad()
def fit_object_weights(sam: nn.Module, emb: ImageEmbedding, target: torch.Tensor, mask: np.ndarray,
                       config: VideoConfig, curve_points: Sequence[int] = (), trace: Optional[dict] = None
                       ) -> FitResult:
    """PerSAM-F video training on frame 0 (spec §5.2): top-1 point + box centre + expanded GT box, 3 outputs."""
    sim_grid, sim = prior.similarity(sam, target, prior.normalized_cells(emb.features), emb)
    points, labels, boxes = _prompts(sim, prior.mask_box(mask)[None], 1, config.box_margin)
    out = decode(sam, emb, points, labels, boxes=boxes, multimask=True)
    logits = upscale(sam, emb, out.low_res)[0]
    if trace is not None:
        trace.update(train_sim_grid=sim_grid[0], points=points[0], box=boxes[0], scores=out.scores[0],
                     masks=logits > 0)
    return fit_mask_weights(logits, torch.as_tensor(mask), config.fit_iterations, config.fit_lr, curve_points)


@dataclass
class StepOutput:
    """``logits``: final high-res logits ``B×H×W``; ``scores``: the decoder's predicted IoU of each final output."""

    logits: torch.Tensor
    scores: torch.Tensor


@dataclass
class _Pass:
    """One decoder pass over a subset ``idx`` of the objects: outputs, chosen index and its high-res logits."""

    idx: np.ndarray
    out: DecoderOutput
    chosen: np.ndarray
    high: torch.Tensor


def _decode_subset(sam: nn.Module, emb: ImageEmbedding, idx: np.ndarray, points: np.ndarray, labels: np.ndarray,
                   boxes: Optional[np.ndarray], mask_input: Optional[torch.Tensor], batch: int) -> DecoderOutput:
    """Multimask decoder pass for objects ``idx`` in chunks of ``batch`` prompts (``boxes``/``mask_input`` are
    already restricted to ``idx``)."""
    outs = []
    for i in range(0, len(idx), batch):
        s = slice(i, i + batch)
        outs.append(decode(sam, emb, points[idx[s]], labels[idx[s]], boxes=None if boxes is None else boxes[s],
                           mask_input=None if mask_input is None else mask_input[s], multimask=True))
    return DecoderOutput(torch.cat([o.low_res for o in outs]), torch.cat([o.scores for o in outs]))


def _upscale(sam: nn.Module, emb: ImageEmbedding, low_res: torch.Tensor, batch: int) -> torch.Tensor:
    """SAM post-processing in chunks of ``batch`` prompts (bounds the memory of ``B×K×H×W`` float maps)."""
    return torch.cat([upscale(sam, emb, low_res[i:i + batch]) for i in range(0, len(low_res), batch)])


def _pick(low_res: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
    """``low_res[b, chosen[b]]`` as ``B×1×256×256``."""
    return low_res[torch.arange(len(chosen)), torch.as_tensor(chosen, dtype=torch.long)][:, None]


def _refine(sam, emb, idx, points, labels, boxes, mask_input, batch) -> _Pass:
    """A refinement pass: choose the output with the best score, keep its high-res logits only."""
    out = _decode_subset(sam, emb, idx, points, labels, boxes, mask_input, batch)
    chosen = out.scores.cpu().numpy().argmax(1)
    return _Pass(idx, out, chosen, _upscale(sam, emb, _pick(out.low_res, chosen), batch)[:, 0])


def _boxes_of(masks: torch.Tensor) -> np.ndarray:
    return np.stack([prior.mask_box(m) for m in masks.cpu().numpy()]) if len(masks) else np.zeros((0, 4), int)


@torch.no_grad()
def video_step(sam: nn.Module, emb: ImageEmbedding, targets: torch.Tensor, boxes: Optional[np.ndarray],
               config: VideoConfig, weights: Optional[torch.Tensor] = None, decoder_batch: int = 1,
               trace: Optional[List[Dict]] = None) -> "StepOutput":
    """One frame for B objects: final high-res logits ``B×H×W`` (object present where > 0) and scores ``B``.

    ``targets``: ``B×C`` unit targets; ``boxes``: ``B×4`` tight boxes ``[x0, y0, x1, y1]`` of the objects in the
    previous label map (the paper's box prompts, expanded by ``config.box_margin`` and with their centre as an extra
    point), or ``None`` for no box prompt (re-finding lost objects; an option beyond the paper);
    ``weights``: ``B×3`` PerSAM-F mixtures (``method="persam_f"``).
    When a pass leaves an object with an empty mask (so the next box is undefined), the object keeps that pass's
    logits (all ≤ 0: absent this frame) instead of crashing as the reference does.
    ``trace``: a list that receives one dict of intermediates per object (conformance checks).
    """
    n, everyone = len(targets), np.arange(len(targets))
    sim_grid, sim = prior.similarity(sam, targets, prior.normalized_cells(emb.features), emb)
    points, labels, boxes = _prompts(sim, boxes, config.num_points, config.box_margin)
    a = _decode_subset(sam, emb, everyone, points, labels, boxes, None, decoder_batch)
    high_a = _upscale(sam, emb, a.low_res, decoder_batch)
    extra: Dict[str, object] = {}
    if config.method == "persam":
        areas = (high_a > 0).flatten(2).sum(-1).cpu().numpy()
        chosen_a = (areas.astype(np.uint8) if config.reproduce_reference_quirks else areas).argmax(1)
        final = high_a[torch.as_tensor(everyone), torch.as_tensor(chosen_a)].clone()
        b = _refine(sam, emb, everyone, points, labels, None, _pick(a.low_res, chosen_a), decoder_batch)
    else:
        w = weights.reshape(n, 3, 1, 1).to(high_a)
        final = (high_a * w).sum(1)
        chosen_a = (a.scores * w[:, 0, 0]).cpu().numpy().argmax(1)    # reference: scores *= w0 (fallback only)
        fallback = ~(final > 0).flatten(1).any(1)
        final[fallback] = high_a[torch.as_tensor(everyone), torch.as_tensor(chosen_a)][fallback]
        alive = np.nonzero((final > 0).flatten(1).any(1).cpu().numpy())[0]
        box_b = _boxes_of(final[alive] > 0)
        weighted_low = (a.low_res * w).sum(1, keepdim=True)
        b = _refine(sam, emb, alive, points, labels, box_b, weighted_low[alive], decoder_batch)
        extra = {"weighted_mask": final > 0, "fallback": fallback.cpu().numpy(), "box_b": box_b}
    final[b.idx] = b.high
    keep = np.nonzero((b.high > 0).flatten(1).any(1).cpu().numpy())[0]
    box_c = _boxes_of(b.high[keep] > 0)
    c = _refine(sam, emb, b.idx[keep], points, labels, box_c, _pick(b.out.low_res, b.chosen)[keep], decoder_batch)
    final[c.idx] = c.high
    scores = torch.zeros(n)
    scores[b.idx] = b.out.scores[torch.arange(len(b.idx)), torch.as_tensor(b.chosen, dtype=torch.long)].cpu()
    scores[c.idx] = c.out.scores[torch.arange(len(c.idx)), torch.as_tensor(c.chosen, dtype=torch.long)].cpu()
    if trace is not None:
        trace.extend(_trace(n, sim_grid, points, boxes, a, high_a, chosen_a, b, c, box_c, final, extra))
    return StepOutput(final, scores)


def _trace(n, sim_grid, points, boxes, a, high_a, chosen_a, b, c, box_c, final, extra) -> List[Dict]:
    """Per-object intermediates of :func:`video_step`, named after the conformance fixtures' fields."""
    rows = []
    for j in range(n):
        t = {"sim_grid": sim_grid[j], "points": points[j], "box": None if boxes is None else boxes[j], "step1_scores": a.scores[j],
             "step1_masks": high_a[j] > 0, "step1_chosen": int(chosen_a[j]), "final_logits": final[j]}
        if extra:
            t.update(weighted_mask=extra["weighted_mask"][j], fallback_used=bool(extra["fallback"][j]))
        for name, p in (("step2", b), ("step3", c)):
            hit = np.nonzero(p.idx == j)[0]
            if len(hit):
                i = int(hit[0])
                t.update({f"{name}_scores": p.out.scores[i], f"{name}_chosen": int(p.chosen[i])})
                if name == "step3":
                    t["step3_box"] = box_c[i]
                elif extra:
                    t["step2_box"] = extra["box_b"][i]
        rows.append(t)
    return rows
