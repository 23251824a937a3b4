"""SAM's mask decoder with fewer passes over memory: the function of segment_anything 1.0's
``MaskDecoder.predict_masks`` (``modeling/mask_decoder.py``, ``modeling/transformer.py``), equal up to float32
rounding, over the stock modules' own parameters (nothing is converted or mutated).

It runs once per prompt and refinement pass, so every object pays it three times a frame. What changes:

* The image side (embedding + dense prompt, positional encoding) is added once by broadcasting and kept as
  contiguous ``(B, H·W, C)`` tokens. The stock code repeats both B times and passes NCHW tensors whose token view is
  strided, so each linear layer over the 4096 image tokens first copies its input.
* Attention of the 4096 image tokens to the 8-10 prompt tokens takes its softmax over the prompt axis laid out
  first (the stock softmax over rows of ~9 elements is a slow shape: 2.3 ms against 5.2 ms per call, ViT-B, 2
  threads); prompt-to-image attention is ``F.scaled_dot_product_attention``. Linear layers run through oneDNN with
  the bias fused (:func:`vos.models.fast_encoder.fused_linear`).
* The output upscaling (two 2×2 stride-2 transposed convolutions with a channel LayerNorm and GELUs) runs as two
  matrix products on the tokens, each output pixel kept beside the token it comes from; the mask logits are their
  product with the hypernetwork outputs, and only those ``B×M×256×256`` logits are rearranged into image order
  (in a profiled ViT-B decoder call the two stock convolutions took 10-15 ms, the two products 3-5 ms; the
  profiler inflates both, a whole call measured 66-88 ms stock against 42-55 ms here).

A replacement transformer (PerSAM's target-guided one) runs as given, on the same broadcast inputs.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.transformer import TwoWayTransformer

from vos.models.fast_encoder import fused_linear, linear_gelu


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q·kᵀ / √d)·v`` for (B, heads, Nq, d) queries and (B, heads, Nk, d) keys and values."""
    if k.shape[-2] >= q.shape[-2]:
        return F.scaled_dot_product_attention(q, k, v)
    scores = (k @ q.transpose(-1, -2)) / math.sqrt(q.shape[-1])      # (B, heads, Nk, Nq): few rows, long ones
    return torch.softmax(scores, dim=-2).transpose(-1, -2) @ v


def attention(a: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A segment_anything ``Attention`` module's function: (B, Nq, C), (B, Nk, C), (B, Nk, C) -> (B, Nq, C)."""
    def heads(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        y = fused_linear(x, linear)
        return y.view(y.shape[0], y.shape[1], a.num_heads, -1).transpose(1, 2)

    out = attend(heads(q, a.q_proj), heads(k, a.k_proj), heads(v, a.v_proj))
    b, _, n, _ = out.shape
    return fused_linear(out.transpose(1, 2).reshape(b, n, a.internal_dim), a.out_proj)


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ``MLPBlock`` (ReLU in the decoder; another activation runs as its module)."""
    hidden = fused_linear(x, mlp.lin1)
    hidden = F.relu(hidden) if type(mlp.act) is nn.ReLU else mlp.act(hidden)
    return fused_linear(hidden, mlp.lin2)


def two_way_block(layer: nn.Module, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                  key_pe: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A ``TwoWayAttentionBlock``: queries (B, Nq, C) = prompt tokens, keys (B, N, C) = image tokens."""
    if layer.skip_first_layer_pe:
        queries = attention(layer.self_attn, queries, queries, queries)
    else:
        q = queries + query_pe
        queries = queries + attention(layer.self_attn, q, q, queries)
    queries = layer.norm1(queries)
    k = keys + key_pe
    queries = layer.norm2(queries + attention(layer.cross_attn_token_to_image, queries + query_pe, k, keys))
    queries = layer.norm3(queries + _mlp(layer.mlp, queries))
    keys = layer.norm4(keys + attention(layer.cross_attn_image_to_token, k, queries + query_pe, queries))
    return queries, keys


def two_way_transformer(t: nn.Module, keys: torch.Tensor, key_pe: torch.Tensor, tokens: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A stock ``TwoWayTransformer`` on image tokens ``keys`` (B, N, C), their positional encoding (1, N, C) and the
    prompt tokens (B, Nq, C); returns the processed (tokens, image tokens)."""
    queries = tokens
    for layer in t.layers:
        queries, keys = two_way_block(layer, queries, keys, tokens, key_pe)
    out = attention(t.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
    return t.norm_final_attn(queries + out), keys


def predict_masks(decoder: nn.Module, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                  sparse: torch.Tensor, dense: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks`` for B prompts on one image: ``B×(1+M)×4H×4W`` mask logits of every mask token
    and ``B×(1+M)`` predicted IoUs.

    ``image_embeddings`` ``1×C×H×W``; ``image_pe`` ``1×C×H×W``; ``sparse`` ``B×Nq×C``; ``dense`` ``B×C×H×W`` (or
    ``1×C×H×W``).
    """
    b = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
    _, c, h, w = image_embeddings.shape
    keys = (image_embeddings + dense).expand(b, -1, -1, -1).permute(0, 2, 3, 1).reshape(b, h * w, c)
    key_pe = image_pe.permute(0, 2, 3, 1).reshape(1, h * w, c)
    if type(decoder.transformer) is TwoWayTransformer:
        hs, keys = two_way_transformer(decoder.transformer, keys, key_pe, tokens)
    else:
        grid = keys.view(b, h, w, c).permute(0, 3, 1, 2)
        hs, keys = decoder.transformer(grid, key_pe.view(1, h, w, c).permute(0, 3, 1, 2).expand(b, -1, -1, -1),
                                       tokens)
    mask_tokens = hs[:, 1:1 + decoder.num_mask_tokens, :]
    hyper_in = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
                           dim=1)                                                # (B, M, c')
    masks = upscaled_masks(decoder.output_upscaling, keys, (h, w), hyper_in)
    if masks is None:                                                            # not the stock upscaling
        upscaled = decoder.output_upscaling(keys.transpose(1, 2).view(b, c, h, w))
        masks = (hyper_in @ upscaled.flatten(2)).view(b, -1, *upscaled.shape[-2:])
    return masks, decoder.iou_prediction_head(hs[:, 0, :])


def _stride2_layers(up: nn.Module) -> Optional[Tuple[nn.Module, ...]]:
    """The layers of the stock output upscaling (ConvTranspose2d k2 s2, LayerNorm2d, GELU, ConvTranspose2d k2 s2,
    GELU), or None for anything else."""
    kinds = (nn.ConvTranspose2d, LayerNorm2d, nn.GELU, nn.ConvTranspose2d, nn.GELU)
    if not isinstance(up, nn.Sequential) or tuple(type(m) for m in up) != kinds:
        return None
    convs = (up[0], up[3])
    if any(c.kernel_size != (2, 2) or c.stride != (2, 2) or c.padding != (0, 0) or c.output_padding != (0, 0)
           or c.groups != 1 or c.dilation != (1, 1) for c in convs):
        return None
    if any(g.approximate != "none" for g in (up[2], up[4])):
        return None
    return tuple(up)


def _sub_pixels(conv: nn.ConvTranspose2d, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """A 2×2 stride-2 transposed convolution on pixels ``(..., C_in)`` (then the exact GELU if ``gelu``):
    ``(..., 2, 2, C_out)``, where entry ``[..., a, b, :]`` is output pixel ``(2i + a, 2j + b)`` of input pixel
    ``(i, j)``."""
    cout = conv.out_channels
    weight = conv.weight.permute(2, 3, 1, 0).reshape(4 * cout, conv.in_channels)   # [(a, b, c_out), c_in]
    bias = conv.bias.repeat(4) if conv.bias is not None else None
    return linear_gelu(x, weight, bias, gelu).view(*x.shape[:-1], 2, 2, cout)


def upscaled_masks(up: nn.Module, keys: torch.Tensor, hw: Tuple[int, int], hyper_in: torch.Tensor
                   ) -> Optional[torch.Tensor]:
    """``hyper_in @ output_upscaling(image tokens)`` as the stock decoder computes it: ``B×M×4H×4W`` logits from
    ``keys`` (B, H·W, C) and ``hyper_in`` (B, M, C/8); None when ``up`` is not the stock upscaling."""
    layers = _stride2_layers(up)
    if layers is None:
        return None
    conv1, norm, _, conv2, _ = layers                             # the GELUs are exact: F.gelu / fused
    b, (h, w), m = keys.shape[0], hw, hyper_in.shape[1]
    x = _sub_pixels(conv1, keys)                                  # (B, H·W, 2, 2, C/4)
    x = F.gelu(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
    x = _sub_pixels(conv2, x, gelu=True)                          # (B, H·W, 2, 2, 2, 2, C/8)
    logits = x.reshape(b, -1, x.shape[-1]) @ hyper_in.transpose(1, 2)            # (B, H·W·16, M)
    # [b, i, j, a, b', a2, b2, m] -> pixel (4i + 2a + a2, 4j + 2b' + b2)
    logits = logits.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return logits.reshape(b, m, 4 * h, 4 * w)
