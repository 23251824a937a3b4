"""PerSAM-F (spec §3): two learnable mask weights mixing SAM's three multimask outputs, SAM frozen.

The three reference logit maps do not depend on the weights, so they are computed once (the reference script
recomputes them every iteration; the result is bit-identical). Then ``iterations`` AdamW steps with a cosine schedule.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vos.models.sam_backend import ImageEmbedding, SamBackend
from vos.persam import prior
from vos.persam.cascade import Prompts, boxes_of, non_empty, refine_twice, upscale_objects
from vos.persam.persam import PerSAM, Reference, check_reference, make_reference, result_of, stage_trace
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


_THREADS = threading.Lock()
_THREADS_STATE = {"users": 0, "saved": 0}

#: Torch intra-op threads while PerSAM-F fits its weights (the default of ``fit_threads``).
FIT_THREADS = 1


@contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run torch ops with ``count`` intra-op threads inside the block (``None``: leave torch's setting alone).

    Torch's thread count is process-wide, so the change is scoped and counted: the first block to start sets it,
    overlapping blocks (other threads) keep it, and the last block to end restores the caller's count.

    Why PerSAM-F fits on one thread: the loop is ~30,000 small tensor ops; on a 2-core CPU one thread measured 1.1 s
    against 7.6-57 s with two (each op pays a thread barrier, and OpenMP spin-waits explode when another process
    holds a core), and 9.6 s against 12-37 s for a 480×854 object.
    """
    if count is None:
        yield
        return
    with _THREADS:
        if _THREADS_STATE["users"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
            torch.set_num_threads(count)
        _THREADS_STATE["users"] += 1
    try:
        yield
    finally:
        with _THREADS:
            _THREADS_STATE["users"] -= 1
            if _THREADS_STATE["users"] == 0:
                torch.set_num_threads(_THREADS_STATE["saved"])


def fit_mask_weights(logits: torch.Tensor, target: torch.Tensor, iterations: int = 1000, lr: float = 1e-3,
                     curve_points: Sequence[int] = (), threads: Optional[int] = FIT_THREADS) -> FitResult:
    """Train the two mask weights on fixed reference logits ``3×H×W`` against ``target`` (``bool H×W``).

    Exactly the reference loop: AdamW(lr, eps=1e-4, weight decay 0.01), CosineAnnealingLR(T_max=iterations) stepped
    each iteration, loss = dice + focal on the weighted sum of the three logit maps. ``threads``: torch intra-op
    threads during the loop (:func:`torch_threads`).
    """
    flat = logits.detach().flatten(1)
    gt = target.float().unsqueeze(0).flatten(1).to(flat.device)
    raw = nn.Parameter(torch.ones(2, 1, device=flat.device) / 3)
    optimizer = torch.optim.AdamW([raw], lr=lr, eps=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    wanted, curve = set(curve_points), []
    with torch.enable_grad(), torch_threads(threads):
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
def reference_logits(backend: SamBackend, ref: Reference, emb: ImageEmbedding, trace: Optional[dict] = None
                     ) -> torch.Tensor:
    """The three high-res multimask logit maps ``3×H×W`` on the reference, prompted at its self-location peak."""
    sim_grid, sim = prior.similarity(backend, ref.target_max_mean, prior.normalized_cells_hwc(emb.features), emb)
    point = prior.top_points(sim[0], 1)
    out = backend.decode(emb, point[None], np.array([[1]]), multimask=True)
    logits = backend.upscale(emb, out.low_res)[0]
    if trace is not None:
        trace.update(ref_sim_grid=sim_grid[0], train_point_xy=point[0], train_scores=out.scores[0],
                     train_masks=logits > 0)
    return logits


def mix(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k · values[:, k]`` for ``B×3×…`` values and ``B×3`` weights, keeping the axis: ``B×1×…``."""
    return (values * weights.reshape(*weights.shape, *([1] * (values.dim() - 2)))).sum(1, keepdim=True)


@torch.no_grad()
def persam_f_segment(backend: SamBackend, state: PerSAMFState, emb: ImageEmbedding, trace: bool = False
                     ) -> PerSAMResult:
    """PerSAM-F inference cascade on an encoded test image (spec §3, inference steps 1-5)."""
    sim_grid, sim = prior.similarity(backend, state.target, prior.normalized_cells(emb.features), emb)
    point = prior.top_points(sim[0], 1)
    prompts = Prompts(point[None], np.array([[1]]))
    s1 = backend.decode(emb, prompts.points, prompts.labels, multimask=True)
    high = upscale_objects(backend, emb, s1.low_res, 1)
    weights = state.weights.reshape(1, 3)
    weighted = mix(high, weights)[:, 0]
    weighted_low = mix(s1.low_res, weights)
    alive = non_empty(weighted)
    r = refine_twice(backend, emb, prompts, alive, boxes_of(weighted[alive] > 0), weighted_low[alive], weighted, 1)
    t = None
    if trace:
        t = dict(sim_grid=sim_grid[0], point_xy=point[0], step1=s1, step1_masks=high[0] > 0,
                 weighted_mask=weighted[0] > 0, weighted_lowres_logits=weighted_low[0, 0],
                 **stage_trace(backend, emb, {"stage2": r.b, "stage3": r.c}))
    return result_of(r.final, float(r.scores()[0]), prompts, sim[0], t)


class PerSAMF(PerSAM):
    """PerSAM-F: ``set_reference(image, mask)``, then :meth:`fit`, then :meth:`segment`.

    ``iterations`` and ``lr`` default to the paper's 1000 and 1e-3; ``fit_threads``: torch threads while fitting
    (:func:`torch_threads`; ``None`` leaves torch's setting alone).
    """

    def __init__(self, sam, iterations: int = 1000, lr: float = 1e-3, fit_threads: Optional[int] = FIT_THREADS):
        super().__init__(sam)
        self.iterations, self.lr, self.fit_threads = iterations, lr, fit_threads
        self.state: Optional[PerSAMFState] = None
        self.fit_result: Optional[FitResult] = None
        self._train: Optional[tuple] = None
        self.train_trace: dict = {}

    def set_reference(self, image: np.ndarray, mask: np.ndarray, mask_value: int = 128) -> "PerSAMF":
        mask_rgb = check_reference(image, mask, mask_value)
        emb = self.backend.encode(image)
        self.reference = make_reference(self.backend, emb, mask_rgb)
        self.state, self.fit_result = None, None
        self.train_trace = {}
        logits = reference_logits(self.backend, self.reference, emb, self.train_trace)
        self._train = (logits, torch.as_tensor(mask_rgb[..., 0] > 0))   # target: any non-zero R (spec §3)
        return self

    def fit(self, curve_points: Sequence[int] = CURVE_POINTS) -> FitResult:
        """Train the two mask weights on the reference (``iterations`` AdamW steps)."""
        ref = self._require_reference()
        logits, target = self._train
        self.fit_result = fit_mask_weights(logits, target, self.iterations, self.lr, curve_points, self.fit_threads)
        self.state = PerSAMFState(ref.target_max_mean, self.fit_result.weights)
        return self.fit_result

    def segment(self, image: np.ndarray, trace: bool = False) -> PerSAMResult:
        if self.state is None:
            self.fit()
        return persam_f_segment(self.backend, self.state, self.backend.encode(image), trace)
