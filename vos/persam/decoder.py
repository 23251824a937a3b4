"""SAM prompt encoder + mask decoder calls, batched over prompts, plus PerSAM's stage-1 target guidance.

Target-guided attention and target-semantic prompting (spec §2.1-2.2) change only the two-way transformer of the
mask decoder. :func:`target_guidance` swaps in a transformer forward with those two changes for the duration of one
decoder call; everything else is segment_anything's own code.
"""
from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
from segment_anything.utils.transforms import ResizeLongestSide

from vos.persam.embedding import ImageEmbedding


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
    """TwoWayTransformer forward with the target embedding ``e`` added as the reference does (spec §2.2).

    The reference adds ``e`` in place to a tensor that is also the tokens' positional embedding, so the positional
    embedding becomes ``P + e`` everywhere, ``e`` is added again before the second block, and the final query is
    ``(Q + P + e) + e``.
    """

    def __init__(self, transformer: nn.Module, embedding: torch.Tensor):
        super().__init__()
        self.transformer, self.embedding = transformer, embedding

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor):
        t, e = self.transformer, self.embedding
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        query_pe = point_embedding + e
        queries = query_pe
        for i, layer in enumerate(t.layers):
            if i > 0:
                queries = queries + e
            queries, keys = layer(queries=queries, keys=keys, query_pe=query_pe, key_pe=key_pe)
        q = queries + query_pe
        q = q + e
        attn_out = t.final_attn_token_to_image(q=q, k=keys + key_pe, v=keys)
        return t.norm_final_attn(queries + attn_out), keys


@contextmanager
def target_guidance(mask_decoder: nn.Module, guidance: Optional[Guidance]) -> Iterator[None]:
    """Within the block, ``mask_decoder`` runs PerSAM's stage-1 transformer (no-op for ``guidance=None``)."""
    if guidance is None:
        yield
        return
    transformer = mask_decoder.transformer
    saved = [layer.cross_attn_token_to_image for layer in transformer.layers]
    try:
        for layer, attn in zip(transformer.layers, saved):
            layer.cross_attn_token_to_image = _BiasedAttention(attn, guidance.bias)
        mask_decoder.transformer = _SemanticPromptTransformer(transformer, guidance.embedding)
        yield
    finally:
        mask_decoder.transformer = transformer
        for layer, attn in zip(transformer.layers, saved):
            layer.cross_attn_token_to_image = attn


@dataclass
class DecoderOutput:
    """``low_res``: ``B×K×256×256`` mask logits (K = 3 multimask outputs, or 1); ``scores``: ``B×K`` predicted IoU."""

    low_res: torch.Tensor
    scores: torch.Tensor


_DENSE_PE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def dense_pe(prompt_encoder: nn.Module) -> torch.Tensor:
    """``prompt_encoder.get_dense_pe()`` (``1×C×64×64``), computed once per model state: it depends on neither the
    image nor the prompts, yet segment_anything recomputes it (sines and cosines of the whole grid) every call.
    Recomputed when the encoding's random matrix moves or changes (new weights loaded)."""
    matrix = prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    key = (matrix.device, matrix.data_ptr(), matrix._version)
    cached = _DENSE_PE.get(prompt_encoder)
    if cached is None or cached[0] != key:
        cached = _DENSE_PE[prompt_encoder] = (key, prompt_encoder.get_dense_pe())
    return cached[1]


def _run_decoder(sam: nn.Module, emb: ImageEmbedding, sparse: torch.Tensor, dense: torch.Tensor,
                 multimask: bool):
    decoder = sam.mask_decoder
    image_pe = dense_pe(sam.prompt_encoder)
    if not hasattr(decoder, "hf_token"):
        return decoder(image_embeddings=emb.features, image_pe=image_pe, sparse_prompt_embeddings=sparse,
                       dense_prompt_embeddings=dense, multimask_output=multimask)
    # HQ-SAM: keep SAM's K outputs and add the HQ token's mask to each (HQ-SAM's own output is the best SAM mask
    # plus the HQ mask; PerSAM needs all three scales).
    vit = emb.interm[0].permute(0, 3, 1, 2)
    hq_features = decoder.embedding_encoder(emb.features) + decoder.compress_vit_feat(vit)
    masks, iou = decoder.predict_masks(image_embeddings=emb.features, image_pe=image_pe,
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       hq_features=hq_features)
    sel = slice(1, decoder.num_mask_tokens - 1) if multimask else slice(0, 1)
    return masks[:, sel] + masks[:, decoder.num_mask_tokens - 1:], iou[:, sel]


@torch.no_grad()
def decode(sam: nn.Module, emb: ImageEmbedding, points: Optional[np.ndarray] = None,
           labels: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None,
           mask_input: Optional[torch.Tensor] = None, multimask: bool = True,
           guidance: Optional[Guidance] = None) -> DecoderOutput:
    """One batched decoder call for B prompts on one image embedding.

    ``points``: ``B×N×2`` ``(x, y)`` pixels of the original image, ``labels``: ``B×N`` (1 fg, 0 bg); ``boxes``:
    ``B×4`` ``[x0, y0, x1, y1]`` pixels; ``mask_input``: ``B×1×256×256`` logits. Coordinates are mapped to the
    1024 input exactly as ``SamPredictor.predict`` does.
    """
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    device = sam.device
    point_prompt = None
    if points is not None:
        coords = torch.as_tensor(transform.apply_coords(points, emb.original_size), dtype=torch.float, device=device)
        point_prompt = (coords, torch.as_tensor(labels, dtype=torch.int, device=device))
    box_prompt = None
    if boxes is not None:
        box_prompt = torch.as_tensor(transform.apply_boxes(boxes, emb.original_size), dtype=torch.float,
                                     device=device)
    sparse, dense = sam.prompt_encoder(points=point_prompt, boxes=box_prompt, masks=mask_input)
    with target_guidance(sam.mask_decoder, guidance):
        low_res, scores = _run_decoder(sam, emb, sparse, dense, multimask)
    return DecoderOutput(low_res, scores)


def upscale(sam: nn.Module, emb: ImageEmbedding, low_res: torch.Tensor) -> torch.Tensor:
    """Low-res logits ``B×K×256×256`` → high-res logits ``B×K×H×W`` (SAM's post-processing)."""
    return sam.postprocess_masks(low_res, emb.input_size, emb.original_size)
