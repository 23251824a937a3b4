"""PerSAM's stage-1 target guidance (spec §2.1-2.2): target-guided attention and target-semantic prompting.

Both change only the two-way transformer of SAM's mask decoder. :func:`guided_transformer` builds, for one decoder
call, a transformer with those two changes out of the shared model's own layers (through
:func:`~vos.models.backend.module_view`), to be passed to :meth:`SamBackend.decode` as ``transformer``: the shared
model is never modified, so threads sharing it do not see each other's guidance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

import torch
import torch.nn as nn

from vos.models.backend import module_view


@dataclass
class Guidance:
    """Stage-1 extras of training-free PerSAM: ``bias`` ``1×1×1×(h·w)`` (attention bias), ``embedding`` ``1×1×C``
    (raw mean target embedding added to the tokens)."""

    bias: torch.Tensor
    embedding: torch.Tensor


class _BiasedAttention(nn.Module):
    """Token→image attention with the reference's bias: ``softmax(softmax(QKᵀ/√d) + bias) V`` (spec §2.1)."""

    def __init__(self, attn: nn.Module, bias: torch.Tensor):
        super().__init__()
        self.attn, self.bias = attn, bias

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = self.attn
        q = a._separate_heads(a.q_proj(q), a.num_heads)
        k = a._separate_heads(a.k_proj(k), a.num_heads)
        v = a._separate_heads(a.v_proj(v), a.num_heads)
        attn = q @ k.permute(0, 1, 3, 2)
        attn = attn / math.sqrt(q.shape[-1])
        attn = torch.softmax(attn, dim=-1)
        attn = torch.softmax(attn + self.bias, dim=-1)
        return a.out_proj(a._recombine_heads(attn @ v))


class _SemanticPromptTransformer(nn.Module):
    """TwoWayTransformer forward with the target embedding ``e`` added as the reference does (spec §2.2), running
    ``layers`` (the transformer's blocks with biased token→image attention).

    The reference adds ``e`` in place to a tensor that is also the tokens' positional embedding, so the positional
    embedding becomes ``P + e`` everywhere, ``e`` is added again before the second block, and the final query is
    ``(Q + P + e) + e``.
    """

    def __init__(self, transformer: nn.Module, embedding: torch.Tensor, layers: List[nn.Module]):
        super().__init__()
        self.transformer, self.embedding, self.blocks = transformer, embedding, layers

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor):
        t, e = self.transformer, self.embedding
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        query_pe = point_embedding + e
        queries = query_pe
        for i, layer in enumerate(self.blocks):
            if i > 0:
                queries = queries + e
            queries, keys = layer(queries=queries, keys=keys, query_pe=query_pe, key_pe=key_pe)
        q = queries + query_pe
        q = q + e
        attn_out = t.final_attn_token_to_image(q=q, k=keys + key_pe, v=keys)
        return t.norm_final_attn(queries + attn_out), keys


def guided_transformer(transformer: nn.Module, guidance: Guidance) -> nn.Module:
    """The stage-1 variant of a mask decoder's two-way ``transformer`` (which is left unchanged)."""
    layers = [module_view(layer, cross_attn_token_to_image=_BiasedAttention(layer.cross_attn_token_to_image,
                                                                             guidance.bias))
              for layer in transformer.layers]
    return _SemanticPromptTransformer(transformer, guidance.embedding, layers)
