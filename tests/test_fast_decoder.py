"""The mask decoder path of :mod:`vos.models.sam_backend`: ``vos.models.fast_decoder.predict_masks`` computes
segment_anything's ``MaskDecoder`` up to float32 rounding (the stock decoder is the oracle), and the post-processing
is ``Sam.postprocess_masks`` to the bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from vos.models import load_sam
from vos.models.sam_backend import ImageEmbedding, dense_pe, sam_backend

#: float32 rounding of a different summation order on ~1e0 logits (measured ~3e-7 on ViT-B widths).
ATOL = 1e-5


@pytest.fixture(scope="module", params=["tiny", "vit_b"])
def model(request):
    with torch.random.fork_rng(devices=[]):
        return load_sam(request.param, random_weights=True, device="cpu", seed=3)


def prompts(sam, batch: int, with_mask: bool, seed: int):
    """Sparse and dense prompt embeddings of ``batch`` random 3-point prompts (and random mask prompts)."""
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, 3, 2, generator=g) * 1024
    labels = torch.randint(0, 2, (batch, 3), generator=g, dtype=torch.int)
    side = 4 * sam.prompt_encoder.image_embedding_size[0]
    masks = torch.randn(batch, 1, side, side, generator=g) * 4 if with_mask else None
    return sam.prompt_encoder(points=(points, labels), boxes=None, masks=masks)


class Wrapped(nn.Module):
    """A replacement transformer (as PerSAM's guided one is): not the stock class, same call signature."""

    def __init__(self, transformer):
        super().__init__()
        self.inner = transformer

    def forward(self, image_embedding, image_pe, point_embedding):
        return self.inner(image_embedding, image_pe, point_embedding)


@pytest.mark.parametrize("batch, with_mask, multimask", [(1, False, True), (1, True, False), (3, True, True),
                                                         (4, False, False)])
@torch.inference_mode()
def test_decoder_matches_segment_anything(model, batch, with_mask, multimask):
    sam, backend = model, sam_backend(model)
    g = torch.Generator().manual_seed(batch)
    pe = sam.prompt_encoder
    emb = ImageEmbedding(torch.randn(1, pe.embed_dim, *pe.image_embedding_size, generator=g), (576, 1024), (480, 854))
    sparse, dense = prompts(sam, batch, with_mask, seed=batch)
    ref_masks, ref_iou = sam.mask_decoder(image_embeddings=emb.features, image_pe=dense_pe(sam.prompt_encoder),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=multimask)
    for decoder in (sam.mask_decoder, _with_transformer(sam.mask_decoder, Wrapped(sam.mask_decoder.transformer))):
        masks, iou = backend._run_decoder(decoder, emb, sparse, dense, multimask)
        assert masks.shape == ref_masks.shape and masks.shape[:2] == (batch, 3 if multimask else 1)
        assert float((masks - ref_masks).abs().max()) <= ATOL
        assert float((iou - ref_iou).abs().max()) <= ATOL
        assert float(ref_masks.abs().max()) > 0.1          # logits that mean something, not all ~0


def _with_transformer(decoder, transformer):
    from vos.models.backend import module_view

    return module_view(decoder, transformer=transformer)


@torch.inference_mode()
def test_postprocessing_is_segment_anythings_to_the_bit(model):
    sam, backend = model, sam_backend(model)
    g = torch.Generator().manual_seed(0)
    for height, width in ((480, 854), (854, 480), (240, 427), (1080, 1920), (500, 500), (13, 999), (195, 260)):
        resized = backend._resize.get_preprocess_shape(height, width, sam.image_encoder.img_size)
        emb = ImageEmbedding(torch.zeros(1), (int(resized[0]), int(resized[1])), (height, width))
        for side in (256, 64, 100):           # 100 does not divide 1024: the stock function runs
            side = side * sam.image_encoder.img_size // 1024 if side != 100 else side
            maps = torch.randn(2, 3, side, side, generator=g)
            expected = sam.postprocess_masks(maps, emb.input_size, emb.original_size)
            assert torch.equal(backend.postprocess(emb, maps), expected), (height, width, side)


def test_decoder_changes_no_mask_decision_of_a_tracked_frame(model):
    """Tracking with the decoder path vs segment_anything's decoder module called as is: label maps equal where
    the stock logits are not within rounding of 0."""
    from vos.persam.video import VideoConfig, object_target, video_step

    sam, backend = model, sam_backend(model)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (240, 427, 3), dtype=np.uint8)
    emb = backend.encode(frame)
    mask = np.zeros(frame.shape[:2], bool)
    mask[60:180, 100:300] = True
    target = object_target(backend, emb, mask)
    boxes = np.array([[100, 60, 299, 179]])
    fast = video_step(backend, emb, target, boxes, VideoConfig())

    class Stock(type(backend)):
        def _run_decoder(self, decoder, emb, sparse, dense, multimask):
            return decoder(image_embeddings=emb.features, image_pe=dense_pe(self.model.prompt_encoder),
                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                           multimask_output=multimask)

    stock = video_step(Stock(sam), emb, target, boxes, VideoConfig())
    far = stock.logits.abs() > 1e-3
    assert bool(far.float().mean() > 0.9)         # random weights: most logits are clear of 0
    assert torch.equal(fast.logits[far] > 0, stock.logits[far] > 0)
    assert float((fast.logits - stock.logits).abs().max()) <= 1e-4
