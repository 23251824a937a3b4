"""Models: official checkpoints (SAM, MobileSAM, HQ-SAM, SAM 2.1), cache + download, test-size configurations, and
the seam through which the engines use them (:mod:`vos.models.backend`)."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn

from vos.errors import CheckpointError
from vos.models.checkpoint import cache_dir, load_weights, resolve_checkpoint
from vos.models.fast_encoder import encoder_kind, use_fast_encoder, use_stock_encoder
from vos.models.registry import MODELS, ModelSpec, get_spec
from vos.models.tiny import build_tiny_sam

__all__ = ["load_model", "load_sam", "default_device", "build_tiny_sam", "MODELS", "ModelSpec", "cache_dir",
           "encoder_kind", "use_fast_encoder", "use_stock_encoder"]


def default_device() -> torch.device:
    """``cuda`` if available, else ``mps``, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_sam(name: str, checkpoint: Optional[str] = None, device: Union[str, torch.device, None] = None,
             encoder: str = "fast", random_weights: bool = False, seed: int = 0) -> nn.Module:
    """Build SAM model ``name`` with its official weights, in eval mode, parameters frozen.

    ``checkpoint``: a file path; default: the official file in :func:`cache_dir`, downloaded (sha256-checked) on
    first use. ``random_weights``: seeded random weights instead (benchmarks, smoke runs). ``encoder``: ``"fast"``
    (fused-attention encoder computing the same function) or ``"stock"``.
    """
    spec = get_spec(name)
    if encoder not in ("fast", "stock"):
        raise CheckpointError(f"unknown encoder {encoder!r}: use 'fast' or 'stock'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    if not random_weights:
        load_weights(model, spec, resolve_checkpoint(spec, checkpoint))
    if encoder == "fast":
        use_fast_encoder(model)
    model.requires_grad_(False)
    return model.to(torch.device(device) if device is not None else default_device()).eval()


def load_model(name: str, checkpoint: Optional[str] = None, device: Union[str, torch.device, None] = None,
               encoder: str = "fast", random_weights: bool = False, seed: int = 0) -> nn.Module:
    """Any registered model by name: :func:`load_sam` for the SAM family, ``vos.models.sam2.load_sam2`` for SAM 2.1
    (``encoder`` applies to SAM ViT encoders only)."""
    if get_spec(name).family == "sam2":
        from vos.models.sam2 import load_sam2

        return load_sam2(name, checkpoint=checkpoint, device=device, random_weights=random_weights, seed=seed)
    return load_sam(name, checkpoint=checkpoint, device=device, encoder=encoder, random_weights=random_weights,
                    seed=seed)
