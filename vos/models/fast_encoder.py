"""Exact, faster SAM ViT image encoder: fused attention with the relative-position bias as a mask, fused MLP.

``use_fast_encoder(sam)`` converts the image encoder of a SAM model **in place** by swapping the classes of some of
its modules for subclasses whose ``forward`` computes the same function with fewer passes over memory. No parameter,
buffer or ``state_dict`` key changes, so checkpoints load before or after the conversion; ``use_stock_encoder(sam)``
swaps the stock classes back and ``encoder_kind(sam)`` tells which one is active. Works for segment-anything 1.0's
``ImageEncoderViT`` (vit_b/l/h) and HQ-SAM's (which also returns ``interm_embeddings``).

What changes (segment-anything 1.0 ``modeling/image_encoder.py`` is the reference):

* ``Attention``: the stock code materialises the ``(B·heads, N, N)`` scores, adds the decomposed relative-position
  terms through a broadcast view (a second ``N×N`` tensor), softmaxes (a third) and multiplies by ``V``; for a global
  block of ViT-B (N = 64·64, 12 heads) each is 805 MB. Here the two small terms ``rel_h`` (…, N, K_h) and ``rel_w``
  (…, N, K_w) are computed as in the stock code and their broadcast sum is the additive ``attn_mask`` of
  ``torch.nn.functional.scaled_dot_product_attention`` (fused blockwise softmax). The mask is built for a chunk of
  query rows × heads × windows at a time (at most ``MASK_BUDGET`` elements) into one reused buffer.
  Measured alternative: riding the bias inside the query/key vectors (``[q·scale, rel_h, rel_w]`` against
  ``[k, onehot_h, onehot_w]``) triples the width of ``QKᵀ``; on a ViT-B global block (2 threads) it took 1.5 s
  against 0.8 s for the mask.
* ``MLPBlock`` and the attention projections run through oneDNN's linear with the bias (and the exact erf GELU of
  ``lin1``) fused in, on CPU float32 without autograd; elsewhere through ``F.linear``. Measured ~17 % faster for the
  ViT-B MLP than ``lin1``, ``GELU``, ``lin2`` (which also copies each bias into its output).
* ``PatchEmbed`` returns a contiguous ``(B, H, W, C)`` tensor. The stock one returns a permuted view of the NCHW
  convolution output, and every later residual add keeps that layout, so each ``LayerNorm`` and ``Linear`` in every
  block first copies its input.

* The neck's 1×1 projection runs as a linear map over the channels of the ``(B, H, W, C)`` tokens (the same
  function): oneDNN's convolution gave results 7e-6 apart at 1 and 2 threads, the linear gives the same bits at any
  thread count, so a run on a 1-CPU Ray actor writes the same masks as one on 2 threads.

Not changed, because it measured no faster: window partitioning (projecting ``qkv`` on the unpadded grid and padding
with the ``qkv`` bias instead measured the same as the stock partition, so the stock ``Block`` is kept); the rest of
the neck (a 3×3 convolution and two ``LayerNorm2d``, ~1 % of a ViT-B frame); MobileSAM's ``TinyViT`` encoder
(``vit_t``), see :func:`use_fast_encoder`.

Float32 by default, equal to the stock encoder up to float32 rounding (max |Δ| ≈ 1e-5 on ViT-B embeddings).
``precision="bf16"`` runs the attention and MLP blocks' matmuls, the relative-position terms and the fused attention
in bfloat16 (float32 accumulation inside the kernels; bfloat16 copies of those weights, cached, the float32
parameters untouched), while the patch embedding, every ``LayerNorm``, the residual stream and the neck stay float32
and the outputs are float32; :func:`vos.models.precision.check_precision` says where it pays. ``compile=True``
compiles the encoder with ``torch.compile`` (``nn.Module.compile``, which keeps the ``state_dict`` keys).
"""
from __future__ import annotations

import functools
import sys
from types import ModuleType
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import get_rel_pos

from vos.errors import InputError
from vos.models.precision import PRECISIONS

MASK_BUDGET = 1 << 24
"""Largest attention-mask chunk built at a time, in elements (64 MiB of float32). ViT-B global block: 4 heads ×
1024 rows per chunk; all 12 heads at once measured ~6 % faster in the attention kernel for 3× the memory."""

QUERY_ROWS = 1024
"""Query rows per chunk when a whole mask does not fit: below ~768 rows the CPU flash kernel uses smaller query
blocks and measured up to 30 % slower; unchunked (4096 rows) measured ~25 % slower than 1024-row chunks."""

BF16_QUERY_ROWS = 512
"""Query rows per chunk of the explicit bfloat16 attention (one head at a time): on a ViT-B global block (2 threads,
Zen 4) 512 rows measured 0.27 s, 256 rows 0.28 s, 1024 rows 0.31 s, 4 heads × 1024 rows 0.74 s, and the CPU flash
kernel with the mask 0.43 s (it gains nothing from bfloat16 there)."""

_VIT_MODULES = ("segment_anything.modeling.image_encoder", "segment_anything_hq.modeling.image_encoder")


def decomposed_rel_pos_terms(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two terms of SAM's decomposed relative-position bias, for queries and keys on the same token grid.

    Args:
        q: **unscaled** queries (B, heads, H·W, head_dim), tokens in row-major (row, col) order; any strides.
        rel_pos_h, rel_pos_w: the attention module's tables (L_h, head_dim), (L_w, head_dim), resized by
            ``segment_anything``'s ``get_rel_pos`` (linear interpolation) when L ≠ 2·H − 1 (resp. 2·W − 1).
        hw: the token grid (H, W).
    Returns:
        ``rel_h`` (B, heads, H·W, H) and ``rel_w`` (B, heads, H·W, W): the bias from query token ``(i, j)`` to key
        token ``(kh, kw)`` is ``rel_h[..., i·W + j, kh] + rel_w[..., i·W + j, kw]``.
    """
    h, w = hw
    r_h = get_rel_pos(h, h, rel_pos_h).to(q.dtype)  # (H, H, head_dim): [query row, key row]
    r_w = get_rel_pos(w, w, rel_pos_w).to(q.dtype)  # (W, W, head_dim): [query col, key col]
    b, heads, n, dim = q.shape
    grid = q.reshape(b, heads, h, w, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid, r_h).reshape(b, heads, n, h)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid, r_w).reshape(b, heads, n, w)
    return rel_h, rel_w


def rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    rel: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """``softmax(scale·q·kᵀ + bias)·v`` with fused SDPA, the bias being ``rel_h[..., kh] + rel_w[..., kw]``.

    Args:
        q, k, v: (B, heads, N, head_dim), any strides with a unit last stride; N = K_h·K_w tokens.
        scale: the factor applied to ``q·kᵀ`` (SAM: head_dim ** -0.5).
        rel: ``(rel_h (B, heads, N, K_h), rel_w (B, heads, N, K_w))`` from :func:`decomposed_rel_pos_terms`, or
            None for no bias.
    Returns:
        (B, N, heads, head_dim).
    """
    if rel is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2)
    b, heads, n, dim = q.shape
    rel_h, rel_w = rel
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    # chunk = query rows x heads x batch entries (windows), with a mask of at most MASK_BUDGET elements
    r_step = n if heads * n * n <= MASK_BUDGET else min(n, QUERY_ROWS)
    h_step = min(heads, max(1, MASK_BUDGET // (r_step * n)))
    b_step = max(1, MASK_BUDGET // (heads * n * n)) if (r_step, h_step) == (n, heads) else 1
    if b_step >= b and h_step == heads and r_step == n:
        mask = (rel_h[..., :, None] + rel_w[..., None, :]).view(b, heads, n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).transpose(1, 2)
    if q.dtype == torch.bfloat16 and q.device.type == "cpu":
        return _explicit_attention(q, k, v, scale, rel_h, rel_w)
    out = q.new_empty(b, n, heads, dim)
    buf = q.new_empty(min(b_step, b) * h_step * r_step * n)
    for b0 in range(0, b, b_step):
        b1 = min(b, b0 + b_step)
        for h0 in range(0, heads, h_step):
            h1 = min(heads, h0 + h_step)
            for r0 in range(0, n, r_step):
                r1 = min(n, r0 + r_step)
                mask = buf[: (b1 - b0) * (h1 - h0) * (r1 - r0) * n].view(b1 - b0, h1 - h0, r1 - r0, kh, kw)
                torch.add(rel_h[b0:b1, h0:h1, r0:r1, :, None], rel_w[b0:b1, h0:h1, r0:r1, None, :], out=mask)
                o = F.scaled_dot_product_attention(
                    q[b0:b1, h0:h1, r0:r1], k[b0:b1, h0:h1], v[b0:b1, h0:h1],
                    attn_mask=mask.view(b1 - b0, h1 - h0, r1 - r0, n), scale=scale,
                )
                out[b0:b1, r0:r1, h0:h1] = o.transpose(1, 2)
    return out


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, rel_h: torch.Tensor,
                        rel_w: torch.Tensor) -> torch.Tensor:
    """:func:`rel_pos_attention` as matrix products and a softmax, one head and :data:`BF16_QUERY_ROWS` query rows
    at a time (the bfloat16 path on CPU, where those products run on the BF16 dot-product kernels); (B, N, heads,
    head_dim)."""
    b, heads, n, dim = q.shape
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    out = q.new_empty(b, n, heads, dim)
    for i in range(b):
        for h in range(heads):
            keys = k[i, h].transpose(0, 1)
            for r0 in range(0, n, BF16_QUERY_ROWS):
                rows = slice(r0, min(n, r0 + BF16_QUERY_ROWS))
                mask = (rel_h[i, h, rows, :, None] + rel_w[i, h, rows, None, :]).view(-1, kh * kw)
                scores = torch.addmm(mask, q[i, h, rows], keys, alpha=scale)
                out[i, rows, h] = torch.softmax(scores, dim=-1) @ v[i, h]
    return out


def low_precision(module: nn.Module, name: str, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Parameter ``name`` of ``module`` cast to ``dtype``, cached on the module while the parameter is unchanged
    (same storage, version and device); None for a missing parameter (a bias-free layer)."""
    param = getattr(module, name)
    if param is None:
        return None
    # an inference tensor has no version counter, and can change in place only inside inference mode
    version = None if param.is_inference() else param._version
    key = (param.data_ptr(), version, param.device, dtype)
    cache = module.__dict__.setdefault("_vos_low_precision", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = cache[name] = (key, param.detach().to(dtype))
    return hit[1]


def fused_linear(x: torch.Tensor, linear: nn.Linear, gelu: bool = False,
                 dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``linear(x)``, followed by the exact (erf) GELU if ``gelu``; (..., in) -> (..., out).

    ``dtype``: None to compute in ``x``'s dtype with the layer's own parameters, or ``torch.bfloat16`` to cast ``x``
    and use cached bfloat16 copies of the weight and bias (output bfloat16). See :func:`linear_gelu`.
    """
    w, b = linear.weight, linear.bias
    if dtype is not None:
        x, w, b = x.to(dtype), low_precision(linear, "weight", dtype), low_precision(linear, "bias", dtype)
    return linear_gelu(x, w, b, gelu)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool = False
                ) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` (weight ``(out, in)``), then the exact GELU if ``gelu``.

    On CPU in float32 or bfloat16 with oneDNN and no autograd, one oneDNN call with bias and GELU fused (and no copy
    of the bias into the output, as ``addmm`` does); otherwise (CUDA, autograd, under ``torch.compile``, which does
    its own fusion) ``F.linear`` (+ ``F.gelu``).
    """
    if (
        x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and weight.dtype == x.dtype
        and torch.backends.mkldnn.is_available() and not torch.compiler.is_compiling()
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    ):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [],
                                                  "none" if gelu else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


def _compute_dtype(module: nn.Module) -> Optional[torch.dtype]:
    """The reduced precision a converted block computes in (None: its parameters' own, float32)."""
    return module.__dict__.get("_vos_dtype")


class _Fast:
    """Base of every converted class. Each is ``type(f"Fast{stock}", (mixin, stock), {})``: the mixin's
    ``forward`` over the stock class's parameters (see :func:`_fast_class`)."""


class _FastPatchEmbed(_Fast):
    """Patch embedding ``(B, 3, H·p, W·p) -> (B, H, W, C)``, returned **contiguous** (stock: a permuted view)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class _FastNeckProjection(_Fast):
    """The neck's first layer, a 1×1 convolution without bias, as a linear map over the channels of the
    ``(B, H, W, C)`` tokens: the same function, and the same result whatever the number of threads (oneDNN's
    convolution measured 7e-6 apart between 1 and 2 threads, enough to move a mask pixel between runs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.view(self.out_channels, self.in_channels)
        return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)


class _FastAttention(_Fast):
    """Multi-head self-attention with decomposed relative positions over one token grid, fused.

    ``forward(x (B, H, W, C)) -> (B, H, W, C)``; B is the batch of images (global blocks) or of windows (windowed
    blocks: the stock ``Block`` partitions the grid into ``window_size``² windows before calling its attention).
    In bfloat16 mode the output is bfloat16 (the ``Block``'s residual add promotes it back to float32).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        dtype = _compute_dtype(self)
        # (B, H·W, 3, heads, hd) -> 3 × (B, heads, H·W, hd) views
        qkv = fused_linear(x, self.qkv, dtype=dtype)
        q, k, v = qkv.view(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        rel = decomposed_rel_pos_terms(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
        out = rel_pos_attention(q, k, v, self.scale, rel)  # (B, H·W, heads, hd)
        return fused_linear(out.reshape(b, h, w, c), self.proj, dtype=dtype)


class _FastMLPBlock(_Fast):
    """``lin2(act(lin1(x)))`` over the last dimension, with ``lin1`` + GELU fused when ``act`` is the exact GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(self)
        if type(self.act) is nn.GELU and self.act.approximate == "none":
            return fused_linear(fused_linear(x, self.lin1, gelu=True, dtype=dtype), self.lin2, dtype=dtype)
        return fused_linear(self.act(fused_linear(x, self.lin1, dtype=dtype)), self.lin2, dtype=dtype)


class _FastEncoder(_Fast):
    """The stock encoder's forward; in bfloat16 mode its outputs are cast to float32."""

    def forward(self, x: torch.Tensor):
        out = super().forward(x)
        if _compute_dtype(self) is None:
            return out
        if isinstance(out, tuple):  # HQ-SAM: (embeddings, interm_embeddings list)
            return out[0].float(), [t.float() for t in out[1]]
        return out.float()


@functools.lru_cache(maxsize=None)
def _fast_class(stock: type, mixin: type) -> type:
    """The subclass of ``stock`` whose ``forward`` is ``mixin``'s (created once per pair)."""
    return type(f"Fast{stock.__name__}", (mixin, stock), {"__module__": __name__, "__doc__": mixin.__doc__})


def _vit_package(enc: nn.Module) -> Optional[ModuleType]:
    """The ``image_encoder`` module (segment_anything's or segment_anything_hq's) whose ``ImageEncoderViT`` ``enc``
    is an instance of, or None."""
    for cls in type(enc).__mro__:
        if cls.__name__ == "ImageEncoderViT" and cls.__module__ in _VIT_MODULES:
            return sys.modules[cls.__module__]
    return None


def _image_encoder(model: nn.Module) -> nn.Module:
    """``model.image_encoder`` for a ``Sam`` (either package), or ``model`` itself if it is an encoder."""
    return getattr(model, "image_encoder", model)


def encoder_precision(model: nn.Module) -> str:
    """``"bf16"`` if :func:`use_fast_encoder` set the image encoder of ``model`` to bfloat16, else ``"fp32"``."""
    return "bf16" if _compute_dtype(_image_encoder(model)) is not None else "fp32"


def encoder_kind(model: nn.Module) -> str:
    """``"fast"`` if :func:`use_fast_encoder` converted the image encoder of ``model`` (a Sam or an encoder),
    else ``"stock"``."""
    return "fast" if isinstance(_image_encoder(model), _Fast) else "stock"


def use_stock_encoder(model: nn.Module) -> nn.Module:
    """Undo :func:`use_fast_encoder` in place (classes, precision and compilation); returns ``model``.

    ``model`` is a ``Sam`` of either package or an image encoder; a stock encoder is left as it is.
    """
    enc = _image_encoder(model)
    for m in enc.modules():
        if isinstance(m, _Fast):
            m.__class__ = type(m).__bases__[1]
        m.__dict__.pop("_vos_dtype", None)
        m.__dict__.pop("_vos_low_precision", None)
    if getattr(enc, "_compiled_call_impl", None) is not None:
        enc._compiled_call_impl = None
    return model


def use_fast_encoder(
    model: nn.Module, *, compile: Union[bool, Dict[str, Any]] = False, precision: str = "fp32"
) -> nn.Module:
    """Convert the image encoder of ``model`` in place to the exact fast implementation; returns ``model``.

    Args:
        model: a ``segment_anything`` or ``segment_anything_hq`` ``Sam``, or its ``ImageEncoderViT``. A MobileSAM
            ``TinyViT`` encoder (``vit_t``) is left stock: its attention runs on 7×7 and 14×14 windows with a
            learned bias and is a small part of its time; an SDPA version measured no faster.
        compile: also compile the encoder with ``torch.compile``: True for its defaults (the first call then
            takes minutes on CPU and needs a C++ compiler), or a dict of its keyword arguments
            (e.g. ``{"mode": "max-autotune"}``). Compiling keeps the ``state_dict`` keys.
        precision: ``"fp32"`` (default, exact) or ``"bf16"`` (see the module docstring; whether the device has
            fast bfloat16 is checked by :func:`vos.models.precision.check_precision`, not here). Outputs are
            float32 either way. MobileSAM's encoder stays float32.
    Raises:
        InputError: ``precision`` is not one of those, or ``model`` has no SAM ViT image encoder.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown encoder precision {precision!r}: use {' or '.join(PRECISIONS)}")
    use_stock_encoder(model)
    enc = _image_encoder(model)
    tiny_vit = sys.modules.get("segment_anything_hq.modeling.tiny_vit_sam")
    if tiny_vit is not None and isinstance(enc, tiny_vit.TinyViT):
        return model
    package = _vit_package(enc)
    if package is None:
        raise InputError(f"cannot speed up an image encoder of type {type(enc).__name__}: expected "
                         f"segment_anything's or segment_anything_hq's ImageEncoderViT (or TinyViT, left as is)")
    for m in enc.modules():
        for stock, mixin in ((package.PatchEmbed, _FastPatchEmbed), (package.Attention, _FastAttention),
                             (package.MLPBlock, _FastMLPBlock)):
            if type(m) is stock:
                m.__class__ = _fast_class(stock, mixin)
    projection = enc.neck[0]
    if type(projection) is nn.Conv2d and projection.kernel_size == (1, 1) and projection.groups == 1:
        projection.__class__ = _fast_class(nn.Conv2d, _FastNeckProjection)
    enc.__class__ = _fast_class(type(enc), _FastEncoder)
    if precision == "bf16":
        for m in (enc, *(m for m in enc.modules() if isinstance(m, (_FastAttention, _FastMLPBlock)))):
            m._vos_dtype = torch.bfloat16
    if compile:
        enc.compile(**(compile if isinstance(compile, dict) else {}))
    return model
