"""Small SAM configurations built from segment_anything's own classes (tests, smoke runs, conformance fixtures).

``TINY_CONFIG`` is the configuration of the conformance fixtures (``tests/data/persam_ref/config.json``):
418,344 parameters, 64-channel embeddings on the standard 64×64 grid of a 1024 input.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict

import torch
import torch.nn as nn
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from vos.errors import CheckpointError

TINY_CONFIG: Dict[str, Any] = {
    "image_encoder": {"class": "ImageEncoderViT", "img_size": 1024, "patch_size": 16, "in_chans": 3, "embed_dim": 32,
                      "depth": 2, "num_heads": 2, "mlp_ratio": 4.0, "out_chans": 64, "qkv_bias": True,
                      "norm_layer": "functools.partial(torch.nn.LayerNorm, eps=1e-6)", "act_layer": "torch.nn.GELU",
                      "use_abs_pos": True, "use_rel_pos": True, "rel_pos_zero_init": True, "window_size": 14,
                      "global_attn_indexes": [1]},
    "prompt_encoder": {"class": "PromptEncoder", "embed_dim": 64, "image_embedding_size": [64, 64],
                       "input_image_size": [1024, 1024], "mask_in_chans": 16, "activation": "torch.nn.GELU"},
    "mask_decoder": {"class": "MaskDecoder", "transformer_dim": 64, "num_multimask_outputs": 3,
                     "activation": "torch.nn.GELU", "iou_head_depth": 3, "iou_head_hidden_dim": 64,
                     "transformer": {"class": "TwoWayTransformer", "depth": 2, "embedding_dim": 64, "num_heads": 8,
                                     "mlp_dim": 256, "activation": "torch.nn.ReLU", "attention_downsample_rate": 2}},
    "sam": {"class": "Sam", "pixel_mean": [123.675, 116.28, 103.53], "pixel_std": [58.395, 57.12, 57.375]},
}

_LAYERS = {"torch.nn.GELU": nn.GELU, "torch.nn.ReLU": nn.ReLU,
           "functools.partial(torch.nn.LayerNorm, eps=1e-6)": partial(nn.LayerNorm, eps=1e-6)}
_CLASSES = {"ImageEncoderViT": ImageEncoderViT, "PromptEncoder": PromptEncoder, "MaskDecoder": MaskDecoder,
            "TwoWayTransformer": TwoWayTransformer}


def _make(cfg: Dict[str, Any]) -> nn.Module:
    """Instantiate one segment_anything class from a config dict (layer names as in the fixtures' config.json)."""
    kwargs = {}
    for key, value in cfg.items():
        if key == "class":
            continue
        if isinstance(value, dict):
            value = _make(value)
        elif isinstance(value, str):
            if value not in _LAYERS:
                raise CheckpointError(f"unsupported layer {value!r} in SAM configuration")
            value = _LAYERS[value]
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return _CLASSES[cfg["class"]](**kwargs)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"bad SAM configuration for {cfg.get('class')!r}: {err}") from None


def build_sam_from_config(config: Dict[str, Any]) -> Sam:
    """A randomly initialised ``Sam`` from a configuration dict laid out like :data:`TINY_CONFIG`."""
    sam_cfg = config["sam"]
    return Sam(image_encoder=_make(config["image_encoder"]), prompt_encoder=_make(config["prompt_encoder"]),
               mask_decoder=_make(config["mask_decoder"]), pixel_mean=list(sam_cfg["pixel_mean"]),
               pixel_std=list(sam_cfg["pixel_std"])).eval()


def build_tiny_sam(seed: int = 0) -> Sam:
    """Tiny SAM with seeded random weights; the (zero-initialised) relative-position tensors are drawn too, so that
    tests exercise them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_sam_from_config(TINY_CONFIG)
        with torch.no_grad():
            for name, param in sam.named_parameters():
                if "rel_pos" in name:
                    param.copy_(0.02 * torch.randn(param.shape))
    return sam
