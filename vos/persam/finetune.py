"""PerSAM-F (spec §3): two learnable mask weights mixing SAM's three multimask outputs, SAM frozen.

The three reference logit maps do not depend on the weights, so they are computed once (the reference script
recomputes them every iteration; the result is bit-identical). Then ``iterations`` AdamW steps with a cosine schedule,
the loss's gradient in the two weights written out by hand (:class:`MixtureLoss`).
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

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


#: ln 2. The per-pixel log terms are computed as log2 (the faster kernel on CPU) and scaled by ln 2 in the scalars.
LN2 = math.log(2.0)
#: The focal loss's α (weight of target pixels; background pixels get 1 − α). Its γ = 2 is in MixtureLoss's formulas.
FOCAL_ALPHA = 0.25


def mixture(raw: torch.Tensor) -> torch.Tensor:
    """``(2,)`` raw parameters ``(w1, w2)`` → ``(3,)`` mixture weights ``[1 − w1 − w2, w1, w2]``."""
    return torch.cat((1 - raw.sum(0, keepdim=True), raw))


class MixtureLoss:
    """The reference's loss, dice + focal (α = 0.25, γ = 2) of the mixed logits ``L = L1 + w1·(L2 − L1) + w2·(L3 −
    L1)`` against the target ``G``, and its gradient in ``(w1, w2)``, written out by hand instead of autograd.

    Every pixel is stored as a row of ``z = basis[0] + w1·basis[1] + w2·basis[2]`` (``basis``: ``3×N`` float32, the
    N = H·W pixels reordered, the ``foreground`` target pixels first), with ``z = L`` on target pixels and ``z = −L``
    on background ones. Then ``p_t = σ(z)``, the pixel's BCE is ``sp = −ln σ(z)``, its focal term ``α_t·sp·t²`` with
    ``t = 1 − σ(z)``, and the dice sums are ``Σσ(L)G = Σ_fg σ(z)`` and ``Σσ(L) = Σ_fg σ(z) + Σ_bg (1 − σ(z))``. The
    derivatives in z: ``dσ/dz = σt`` and ``d(sp·t²)/dz = −t²(t + 2·sp·σ)``; the gradient in ``(w1, w2)`` is the
    per-pixel derivative dotted with ``basis[1]`` and ``basis[2]``. A step is two transcendental passes (sigmoid,
    log2) and about nine simple ones over N floats, into reused buffers (the reference's autograd: ~60 ops).
    """

    def __init__(self, logits: torch.Tensor, target: torch.Tensor):
        """``logits``: the three maps ``3×H×W``; ``target``: ``bool H×W``."""
        flat = logits.detach().float().flatten(1)
        fg = target.flatten().to(flat.device, torch.bool)
        basis = torch.stack((flat[0], flat[1] - flat[0], flat[2] - flat[0]))
        self.basis = torch.cat((basis[:, fg], -basis[:, ~fg]), 1).contiguous()
        self.n, self.foreground = self.basis.shape[1], int(fg.sum())
        self.log2p, self.prob, self.rest, self.pixel = self.basis.new_empty(4, self.n)
        self.one = torch.ones((), dtype=self.basis.dtype, device=self.basis.device)

    def _parts(self) -> Tuple[Tuple[slice, float], Tuple[slice, float]]:
        """``(pixels, α_t)`` of the target and of the background pixels."""
        return (slice(0, self.foreground), FOCAL_ALPHA), (slice(self.foreground, self.n), 1 - FOCAL_ALPHA)

    def _pixels(self, w1: float, w2: float, stable: bool) -> None:
        """Fill the per-pixel buffers: σ(z), log2 σ(z), t = 1 − σ(z) and ``t(t + 2·sp·σ)``.

        ``stable``: log σ from ``logsigmoid`` (finite where σ(z) underflows to 0, z below about −88) instead of the
        faster ``log2(σ)``."""
        b, z = self.basis, self.log2p
        torch.add(b[0], b[1], alpha=w1, out=z).add_(b[2], alpha=w2)
        torch.sigmoid(z, out=self.prob)
        if stable:
            torch.div(torch.nn.functional.logsigmoid(z), LN2, out=self.log2p)
        else:
            torch.log2(self.prob, out=self.log2p)
        torch.sub(self.one, self.prob, out=self.rest)
        torch.addcmul(self.rest, self.log2p, self.prob, value=-2 * LN2, out=self.pixel).mul_(self.rest)

    def __call__(self, w1: float, w2: float, values: bool = False, stable: bool = False
                 ) -> Tuple[List[float], Optional[float], Optional[float]]:
        """``([∂loss/∂w1, ∂loss/∂w2], dice, focal)`` at ``(w1, w2)``; dice and focal only with ``values``.

        A step whose fast ``log2(σ)`` is not finite somewhere (σ(z) underflowed) is recomputed ``stable``."""
        self._pixels(w1, w2, stable)
        parts = self._parts()
        inside, outside = (float(self.prob[part].sum()) for part, _ in parts)
        dice_num, dice_den = 2 * inside + 1, inside - outside + self.n + 1
        dice, focal = None, None
        if values:
            dice = 1 - dice_num / dice_den
            sp_t2 = torch.mul(self.log2p, self.rest).mul_(self.rest)
            focal = -LN2 * sum(alpha * float(sp_t2[part].sum()) for part, alpha in parts) / self.n
        coefs = (-(2 * dice_den - dice_num) / dice_den ** 2, -dice_num / dice_den ** 2)   # ∂dice/∂σ(z) per part
        for (part, alpha), coef in zip(parts, coefs):
            torch.add(self.prob[part], self.pixel[part], alpha=-alpha / self.n / coef, out=self.pixel[part])
        self.pixel.mul_(self.rest)      # ∂loss/∂z = coef·t·(σ − α_t/(N·coef)·t(t + 2·sp·σ))
        grad = sum(coef * torch.mv(self.basis[1:, part], self.pixel[part]).double()
                   for (part, _), coef in zip(parts, coefs))
        out = grad.tolist()
        if not stable and not all(map(math.isfinite, out + ([focal] if values else []))):
            return self(w1, w2, values, stable=True)
        return out, dice, focal


@dataclass
class AdamW:
    """``torch.optim.AdamW``'s update (decoupled weight decay, bias-corrected moments) on a few Python floats."""

    size: int
    eps: float = 1e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    steps: int = 0

    def __post_init__(self):
        self.m, self.v = [0.0] * self.size, [0.0] * self.size

    def step(self, params: List[float], grads: Sequence[float], lr: float) -> None:
        """Update ``params`` in place with learning rate ``lr``."""
        self.steps += 1
        b1, b2 = self.betas
        corr1, corr2 = 1 - b1 ** self.steps, math.sqrt(1 - b2 ** self.steps)
        for i, g in enumerate(grads):
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            params[i] *= 1 - lr * self.weight_decay
            params[i] -= lr / corr1 * self.m[i] / (math.sqrt(self.v[i]) / corr2 + self.eps)


def cosine_lr(base: float, step: int, period: int) -> float:
    """``CosineAnnealingLR(T_max=period, eta_min=0)``'s learning rate after ``step`` scheduler steps."""
    return base * (1 + math.cos(math.pi * step / period)) / 2


_THREADS = threading.Lock()
_THREADS_STATE = {"users": 0, "saved": 0}

#: Torch intra-op threads while PerSAM-F fits its weights (the default of ``fit_threads``).
FIT_THREADS = 1


@contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run torch ops with ``count`` intra-op threads inside the block (``None``: leave torch's setting alone).

    Torch's thread count is process-wide, so the change is scoped and counted: the first block to start sets it,
    overlapping blocks (other threads) keep it, and the last block to end restores the caller's count.

    Why PerSAM-F fits on one thread: the autograd loop it had was ~30,000 small tensor ops; on a 2-core CPU one thread
    measured 1.1 s against 7.6-57 s with two (each op pays a thread barrier, and OpenMP spin-waits explode when another
    process holds a core), and 9.6 s against 12-37 s for a 480×854 object. The hand-written loop (:class:`MixtureLoss`,
    ~12 ops a step over the whole frame) measured 2.6-3.7 s on one thread against 27-60 s on two for a 480×854 object,
    on a 2-core CPU shared with other processes.
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

    The reference loop's function: raw parameters ``(w1, w2)`` from 1/3 (float32), AdamW(lr, eps=1e-4, weight decay
    0.01), CosineAnnealingLR(T_max=iterations) stepped each iteration, loss = dice + focal on the weighted sum of the
    three logit maps; the loss's gradient by hand (:class:`MixtureLoss`), the optimiser on Python floats
    (:class:`AdamW`). ``threads``: torch intra-op threads during the loop (:func:`torch_threads`).
    """
    wanted, curve = set(curve_points), []
    raw = [float(torch.tensor(1 / 3))] * 2        # the float32 1/3 of the reference's torch.ones(2, 1) / 3
    optimizer = AdamW(2)
    with torch.no_grad(), torch_threads(threads):
        loss = MixtureLoss(logits, target)
        for it in range(iterations):
            grad, dice, focal = loss(*raw, values=it in wanted)
            if it in wanted:
                curve.append({"iteration": it, "weights_before_step": [1 - raw[0] - raw[1], *raw], "dice": dice,
                              "focal": focal})
            optimizer.step(raw, grad, cosine_lr(lr, it, iterations))
    params = torch.tensor(raw, dtype=torch.float32, device=logits.device)
    return FitResult(mixture(params), params, curve)


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
