"""Model registry, checkpoint cache / download / verification, and the HQ-SAM path of the engine."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conformance import IN_REPO, read_png
from vos.errors import CheckpointError
from vos.models import MODELS, default_device, load_sam
from vos.models.sam_backend import HqSamBackend, dense_pe, sam_backend
from vos.models.checkpoint import resolve_checkpoint
from vos.persam import PerSAM, PerSAMF

WEIGHTS = IN_REPO / "weights" / "tiny_sam_public.pt"


def test_registry_lists_the_official_files():
    assert MODELS["vit_h"].filename == "sam_vit_h_4b8939.pth" and MODELS["vit_h"].md5_prefix == "4b8939"
    assert MODELS["vit_b"].url.endswith("/segment_anything/sam_vit_b_01ec64.pth")
    assert all(len(MODELS[n].sha256) == 64 for n in ("vit_h", "vit_l", "vit_b", "vit_t"))
    assert default_device().type in ("cuda", "mps", "cpu")


def test_load_sam_tiny_from_a_file_is_frozen_and_in_eval_mode():
    sam = load_sam("tiny", checkpoint=str(WEIGHTS), encoder="stock", device="cpu")
    assert not sam.training and not any(p.requires_grad for p in sam.parameters())
    state = torch.load(WEIGHTS, weights_only=True)
    assert torch.equal(sam.state_dict()["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"])


def _file_spec(tmp_path: Path, payload: bytes, sha: str | None):
    src = tmp_path / "served" / "tiny.pth"
    src.parent.mkdir()
    src.write_bytes(payload)
    return replace(MODELS["tiny"], filename="tiny.pth", url=src.as_uri(), sha256=sha)


def test_download_verifies_then_renames_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOS_CACHE", str(tmp_path / "cache"))
    payload = WEIGHTS.read_bytes()
    spec = _file_spec(tmp_path, payload, hashlib.sha256(payload).hexdigest())
    path = resolve_checkpoint(spec)
    assert path == tmp_path / "cache" / "tiny.pth" and path.read_bytes() == payload
    assert not list(path.parent.glob("*.part"))
    assert (path.parent / "tiny.pth.verified").exists()
    assert resolve_checkpoint(spec) == path            # cached: no second download


def test_download_with_a_wrong_hash_leaves_nothing_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("VOS_CACHE", str(tmp_path / "cache"))
    spec = _file_spec(tmp_path, b"not the weights", "0" * 64)
    with pytest.raises(CheckpointError, match="does not match its sha256") as err:
        resolve_checkpoint(spec)
    assert "--checkpoint PATH" in str(err.value)
    assert not list((tmp_path / "cache").glob("*"))


def test_unreachable_download_names_the_file_the_url_and_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("VOS_CACHE", str(tmp_path / "cache"))
    spec = replace(MODELS["tiny"], filename="tiny.pth", url=(tmp_path / "nowhere" / "tiny.pth").as_uri(),
                   sha256=None)
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(spec)
    message = str(err.value)
    assert "could not be downloaded" in message and spec.url in message and str(tmp_path / "cache") in message


def test_a_corrupt_cached_official_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("VOS_CACHE", str(tmp_path))
    (tmp_path / MODELS["vit_b"].filename).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="sha256 .* does not match the official sam_vit_b_01ec64.pth"):
        load_sam("vit_b", encoder="stock")


def _tiny_hq_sam():
    from segment_anything_hq.modeling import (ImageEncoderViT, MaskDecoderHQ, PromptEncoder, Sam,
                                              TwoWayTransformer)

    torch.manual_seed(0)
    encoder = ImageEncoderViT(img_size=1024, patch_size=16, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                              mlp_ratio=4.0, out_chans=64, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                              use_rel_pos=True, window_size=14, global_attn_indexes=(1,))
    decoder = MaskDecoderHQ(num_multimask_outputs=3, transformer_dim=64, iou_head_depth=3, iou_head_hidden_dim=64,
                            vit_dim=32, transformer=TwoWayTransformer(depth=2, embedding_dim=64, mlp_dim=256,
                                                                      num_heads=8))
    sam = Sam(image_encoder=encoder, mask_decoder=decoder,
        prompt_encoder=PromptEncoder(embed_dim=64, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=16),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    return sam.eval().requires_grad_(False)


def test_hq_backend_matches_hq_sams_own_decoder_and_runs_persam():
    """HQ-SAM: each of SAM's outputs corrected with the HQ token's mask. The oracle is segment_anything_hq's own
    ``MaskDecoderHQ.forward`` (single mask, and the best-scored of the multimask outputs); then PerSAM and PerSAM-F,
    including the stage-1 target guidance on HQ's transformer."""
    sam = _tiny_hq_sam()
    backend = sam_backend(sam)
    assert isinstance(backend, HqSamBackend)
    case = IN_REPO / "cases" / "image_cat" / "inputs"
    image, mask = read_png(case / "ref_image.png"), read_png(case / "ref_mask.png")
    emb = backend.encode(image)
    assert emb.interm is not None and len(emb.interm) == 1
    points, labels = np.array([[[60, 100], [150, 40]]]), np.array([[1, 0]])
    sparse, dense = sam.prompt_encoder(points=(torch.tensor(points, dtype=torch.float) * 1024 / 260,
                                               torch.tensor(labels)), boxes=None, masks=None)

    def official(multimask):
        with torch.no_grad():
            return sam.mask_decoder(emb.features, sam.prompt_encoder.get_dense_pe(), sparse, dense,
                                    multimask_output=multimask, hq_token_only=False, interm_embeddings=emb.interm)

    single = backend.decode(emb, points, labels, multimask=False)
    masks, iou = official(False)
    torch.testing.assert_close(single.low_res, masks, rtol=0, atol=0)
    torch.testing.assert_close(single.scores, iou, rtol=0, atol=0)
    multi = backend.decode(emb, points, labels, multimask=True)
    assert multi.low_res.shape == (1, 3, 256, 256)
    best = int(multi.scores[0].argmax())
    masks, iou = official(True)
    torch.testing.assert_close(multi.low_res[:, best:best + 1], masks, rtol=0, atol=0)
    torch.testing.assert_close(multi.scores[:, best:best + 1], iou, rtol=0, atol=0)
    result = PerSAM(sam).set_reference(image, mask).segment(read_png(case / "test_image.png"))
    assert result.mask.shape == (244, 183) and np.isfinite(result.score)
    f = PerSAMF(sam, iterations=5).set_reference(image, mask)
    f.fit()
    assert f.segment(image).mask.shape == image.shape[:2]


def test_dense_positional_encoding_is_cached_until_the_weights_change():
    from vos.models import build_tiny_sam

    sam = build_tiny_sam(seed=1)
    first = dense_pe(sam.prompt_encoder)
    assert dense_pe(sam.prompt_encoder) is first
    torch.testing.assert_close(first, sam.prompt_encoder.get_dense_pe(), rtol=0, atol=0)
    sam.load_state_dict(build_tiny_sam(seed=2).state_dict())
    again = dense_pe(sam.prompt_encoder)
    assert again is not first
    torch.testing.assert_close(again, sam.prompt_encoder.get_dense_pe(), rtol=0, atol=0)
