"""The model families: for each, how its models load, how a loaded model gets its backend, and its default method.

Adding a family (EdgeTAM, SAM 3's tracker, …) is one backend module (see :mod:`vos.models.backend` for what it
provides), one :class:`Family` here, its registry entries (``ModelSpec(..., backend=<family>)``) and, for tracking, an
engine registered with its method in :mod:`vos.methods`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch.nn as nn


@dataclass(frozen=True)
class Family:
    """``name``: the family's key; ``label``: what it is, for messages; ``default_method``: the method tracking uses
    when none is asked for; ``load(name, **options)``: a registered model with its weights (``vos.load_model``'s
    options); ``backend(model)``: the backend of a loaded model of this family, None for any other model (imports
    nothing the model's own package has not imported already)."""

    name: str
    label: str
    default_method: str
    load: Callable[..., nn.Module]
    backend: Callable[[object], Optional[object]]


def _load_sam(name: str, **options) -> nn.Module:
    from vos.models import load_sam

    return load_sam(name, **options)


def _load_sam2(name: str, encoder: str = "fast", **options) -> nn.Module:
    from vos.models.sam2 import load_sam2

    return load_sam2(name, **options)


def _sam_backend(model):
    from vos.models.sam_backend import wrap

    return wrap(model)


def _sam2_backend(model):
    from vos.models.sam2_backend import wrap

    return wrap(model)


FAMILIES: Dict[str, Family] = {f.name: f for f in [
    Family("sam", "SAM-family models (SAM, MobileSAM, HQ-SAM)", "persam_f", _load_sam, _sam_backend),
    Family("sam2", "SAM 2 models (SAM 2.1)", "sam2", _load_sam2, _sam2_backend),
]}
