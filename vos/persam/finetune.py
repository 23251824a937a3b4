"""PerSAM-F (spec §3): two learnable mask weights mixing SAM's three multimask outputs, SAM frozen.

The three reference logit maps do not depend on the weights, so they are computed once (the reference script
recomputes them every iteration; the result is bit-identical). Then ``iterations`` AdamW steps with a cosine schedule.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vos.persam import prior
from vos.persam.decoder import decode, upscale
from vos.persam.embedding import ImageEmbedding, encode_image
from vos.persam.persam import PerSAM, Reference, _best, check_reference, make_reference
from vos.persam.result import PerSAMResult

#: Iterations at which :func:`fit_mask_weights` records the loss curve (as the conformance fixtures do).
CURVE_POINTS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 750, 799, 800, 900, 950, 999)


@dataclass
class FitResult:
    """Learned mixture ``weights`` ``(3,)`` = ``[1 − w1 − w2, w1, w2]`` (applied to multimask outputs 0, 1, 2), the raw
    parameters ``(w1, w2)`` and the recorded ``curve`` (iteration, weights before the step, dice, focal)."""

    weights: torch.Tensor
    raw: torch.Tensor
    curve: List[Dict] = field(default_factory=list)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − (2·Σσ(L)G + 1)/(Σσ(L) + ΣG + 1)`` for ``1×N`` logits and targets."""
    prob = logits.sigmoid().flatten(1)
    numerator = 2 * (prob * target).sum(-1)
    denominator = prob.sum(-1) + target.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels (α = 0.25, γ = 2) for ``1×N`` logits and targets."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * loss).mean(1).sum()


def mixture(raw: torch.Tensor) -> torch.Tensor:
    """``(2, 1)`` raw parameters → ``(3, 1)`` mixture weights ``[1 − w1 − w2, w1, w2]``."""
    return torch.cat((1 - raw.sum(0).unsqueeze(0), raw), dim=0)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one CPU thread inside the block.

    The fitting loop is ~30,000 small tensor ops; on a 2-core CPU one thread measured 1.1 s against 7.6-57 s with two
    (each op pays a thread barrier, and OpenMP spin-waits explode when another process holds a core), and 9.6 s
    against 12-37 s for a 480×854 object.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_mask_weights(logits: torch.Tensor, target: torch.Tensor, iterations: int = 1000, lr: float = 1e-3,
                     curve_points: Sequence[int] = ()) -> FitResult:
    """Train the two mask weights on fixed reference logits ``3×H×W`` against ``target`` (``bool H×W``).

    Exactly the reference loop: AdamW(lr, eps=1e-4, weight decay 0.01), CosineAnnealingLR(T_max=iterations) stepped
    each iteration, loss = dice + focal on the weighted sum of the three logit maps.
    """
    flat = logits.detach().flatten(1)
    gt = target.float().unsqueeze(0).flatten(1).to(flat.device)
    raw = nn.Parameter(torch.ones(2, 1, device=flat.device) / 3)
    optimizer = torch.optim.AdamW([raw], lr=lr, eps=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    wanted, curve = set(curve_points), []
    with torch.enable_grad(), single_thread():
        for it in range(iterations):
            weights = mixture(raw)
            mixed = (flat * weights).sum(0).unsqueeze(0)
            dice, focal = dice_loss(mixed, gt), focal_loss(mixed, gt)
            if it in wanted:
                curve.append({"iteration": it, "weights_before_step": weights.detach().flatten().tolist(),
                              "dice": dice.item(), "focal": focal.item()})
            optimizer.zero_grad()
            (dice + focal).backward()
            optimizer.step()
            scheduler.step()
    raw = raw.detach()
    return FitResult(mixture(raw).flatten(), raw.flatten(), curve)


@dataclass
class PerSAMFState:
    """A fitted PerSAM-F reference: unit max+mean target ``1×C`` and mixture ``weights`` ``(3,)``."""

    target: torch.Tensor
    weights: torch.Tensor


@torch.no_grad()
def reference_logits(sam: nn.Module, ref: Reference, emb: ImageEmbedding, trace: Optional[dict] = None
                     ) -> torch.Tensor:
    """The three high-res multimask logit maps ``3×H×W`` on the reference, prompted at its self-location peak."""
    sim_grid, sim = prior.similarity(sam, ref.target_max_mean, prior.normalized_cells_hwc(emb.features), emb)
    point = prior.top_points(sim[0], 1)
    out = decode(sam, emb, point[None], np.array([[1]]), multimask=True)
    logits = upscale(sam, emb, out.low_res)[0]
    if trace is not None:
        trace.update(ref_sim_grid=sim_grid[0], train_point_xy=point[0], train_scores=out.scores[0],
                     train_masks=logits > 0)
    return logits


def _weighted(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k · values_k`` over the first axis of a ``3×…`` tensor."""
    return (values * weights.reshape(-1, *([1] * (values.dim() - 1)))).sum(0)


@torch.no_grad()
def persam_f_segment(sam: nn.Module, state: PerSAMFState, emb: ImageEmbedding, trace: bool = False
                     ) -> PerSAMResult:
    """PerSAM-F inference cascade on an encoded test image (spec §3, inference steps 1-5)."""
    t = {} if trace else None
    sim_grid, sim = prior.similarity(sam, state.target, prior.normalized_cells(emb.features), emb)
    point = prior.top_points(sim[0], 1)
    points, labels = point[None], np.array([[1]])
    s1 = decode(sam, emb, points, labels, multimask=True)
    high = upscale(sam, emb, s1.low_res)[0]
    weighted_mask = _weighted(high, state.weights) > 0
    weighted_low = _weighted(s1.low_res[0], state.weights)
    box2 = prior.mask_box(weighted_mask.cpu().numpy())
    s2 = decode(sam, emb, points, labels, boxes=box2[None], mask_input=weighted_low[None, None], multimask=True)
    b2 = _best(s2.scores[0])
    box3 = prior.mask_box((upscale(sam, emb, s2.low_res[:, b2:b2 + 1])[0, 0] > 0).cpu().numpy())
    s3 = decode(sam, emb, points, labels, boxes=box3[None], mask_input=s2.low_res[:, b2:b2 + 1], multimask=True)
    b3 = _best(s3.scores[0])
    logits = upscale(sam, emb, s3.low_res[:, b3:b3 + 1])[0, 0]
    if t is not None:
        t.update(sim_grid=sim_grid[0], point_xy=point[0], step1=s1, step1_masks=high > 0,
                 weighted_mask=weighted_mask, weighted_lowres_logits=weighted_low, stage2_box=box2, stage2=s2,
                 stage2_best=b2, stage2_masks=upscale(sam, emb, s2.low_res)[0] > 0, stage3_box=box3, stage3=s3,
                 stage3_best=b3, stage3_masks=upscale(sam, emb, s3.low_res)[0] > 0)
    return PerSAMResult(mask=(logits > 0).cpu().numpy(), logits=logits.float().cpu().numpy(),
                        score=float(s3.scores[0, b3]), points=points[0], labels=labels[0], trace=t or {})


class PerSAMF(PerSAM):
    """PerSAM-F: ``set_reference(image, mask)``, then :meth:`fit`, then :meth:`segment`.

    ``iterations`` and ``lr`` default to the paper's 1000 and 1e-3.
    """

    def __init__(self, sam: nn.Module, iterations: int = 1000, lr: float = 1e-3):
        super().__init__(sam)
        self.iterations, self.lr = iterations, lr
        self.state: Optional[PerSAMFState] = None
        self.fit_result: Optional[FitResult] = None
        self._train: Optional[tuple] = None
        self.train_trace: dict = {}

    def set_reference(self, image: np.ndarray, mask: np.ndarray, mask_value: int = 128) -> "PerSAMF":
        mask_rgb = check_reference(image, mask, mask_value)
        emb = encode_image(self.sam, image)
        self.reference = make_reference(self.sam, emb, mask_rgb)
        self.state, self.fit_result = None, None
        self.train_trace = {}
        logits = reference_logits(self.sam, self.reference, emb, self.train_trace)
        self._train = (logits, torch.as_tensor(mask_rgb[..., 0] > 0))   # target: any non-zero R (spec §3)
        return self

    def fit(self, curve_points: Sequence[int] = CURVE_POINTS) -> FitResult:
        """Train the two mask weights on the reference (``iterations`` AdamW steps)."""
        ref = self._require_reference()
        logits, target = self._train
        self.fit_result = fit_mask_weights(logits, target, self.iterations, self.lr, curve_points)
        self.state = PerSAMFState(ref.target_max_mean, self.fit_result.weights)
        return self.fit_result

    def segment(self, image: np.ndarray, trace: bool = False) -> PerSAMResult:
        if self.state is None:
            self.fit()
        return persam_f_segment(self.sam, self.state, encode_image(self.sam, image), trace)
