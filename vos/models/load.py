"""Loading a model by registry name: the checkpoint (a path, or the official file downloaded into the cache and
verified), the architecture, the device, the encoder implementation and the precision."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn

from vos.errors import CheckpointError, InputError
from vos.models.checkpoint import load_weights, resolve_checkpoint
from vos.models.fast_encoder import encoder_precision, use_fast_encoder
from vos.models.precision import check_precision
from vos.models.registry import get_spec


def default_device() -> torch.device:
    """``cuda`` if available, else ``mps``, else ``cpu``."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_sam(name: str, checkpoint: Optional[str] = None, device: Union[str, torch.device, None] = None,
             encoder: str = "fast", random_weights: bool = False, seed: int = 0, precision: str = "fp32") -> nn.Module:
    """Build SAM model ``name`` with its official weights, in eval mode, parameters frozen.

    ``checkpoint``: a file path; default: the official file in :func:`cache_dir`, downloaded (sha256-checked) on
    first use. ``random_weights``: seeded random weights instead (benchmarks, smoke runs). ``encoder``: ``"fast"``
    (fused-attention encoder computing the same function) or ``"stock"``. ``precision``: ``"fp32"`` (exact) or
    ``"bf16"`` (the fast ViT encoder in bfloat16, outputs float32; refused where the device has no fast bfloat16 and
    for TinyViT encoders; :mod:`vos.models.precision`).
    """
    spec = get_spec(name)
    if encoder not in ("fast", "stock"):
        raise CheckpointError(f"unknown encoder {encoder!r}: use 'fast' or 'stock'")
    device = torch.device(device) if device is not None else default_device()
    check_precision(precision, device)
    if precision == "bf16" and encoder != "fast":
        raise InputError("--precision bf16 runs on the fast encoder: use --encoder fast (the default)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    if encoder == "fast":  # the conversion keeps every parameter and state_dict key: weights load the same after it
        use_fast_encoder(model, precision=precision)
        if encoder_precision(model) != precision:
            raise InputError(f"--precision bf16 is not available for {name}: its TinyViT image encoder runs in "
                             f"float32 only")
    if not random_weights:
        weights = spec.weights(spec, checkpoint) if spec.weights else resolve_checkpoint(spec, checkpoint)
        load_weights(model, spec, weights)
    model.requires_grad_(False)
    return model.to(device).eval()


def load_model(name: str, checkpoint: Optional[str] = None, device: Union[str, torch.device, None] = None,
               encoder: str = "fast", random_weights: bool = False, seed: int = 0, precision: str = "fp32"
               ) -> nn.Module:
    """Any registered model by name, loaded by its family (:mod:`vos.models.families`): :func:`load_sam` for the SAM
    family, ``vos.models.sam2.load_sam2`` for SAM 2.1 (``encoder`` applies to SAM ViT encoders only; ``precision``
    to both)."""
    from vos.models.families import FAMILIES

    return FAMILIES[get_spec(name).backend].load(name, checkpoint=checkpoint, device=device, encoder=encoder,
                                                 random_weights=random_weights, seed=seed, precision=precision)
