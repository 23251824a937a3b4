"""The model seam: one backend per model family, and the one place that tells the families apart.

A backend wraps a loaded model and is all that ``persam/``, ``trackers/`` and ``prompts`` use of it:

- ``encode(frame)``: the image encoder, once per frame, into the family's features (:class:`Features`);
- ``prompt_logits(features, prompts)``: clicks and boxes → per-object logits at frame resolution;
- PerSAM's primitives, so that its location prior and decoder cascade (and the re-detector built on them) run on any
  family: ``features.features`` (the image embedding the mask decoder reads, ``1×C×h×w``), ``input_tensor(image)``
  (the family's preprocessing, which the reference grid mask goes through), ``decode`` (a batch of point / box /
  mask prompts on one frame, optionally with a replacement two-way transformer: PerSAM's target guidance),
  ``upscale`` / ``postprocess`` (decoder-grid maps → frame resolution);
- the family's own tracking primitives (the SAM 2.1 backend's memory steps), used by that family's engine only;
- ``precision``: what the image encoder runs in (``"fp32"`` or ``"bf16"``).

Families: :mod:`vos.models.sam_backend` (SAM, MobileSAM, HQ-SAM) and :mod:`vos.models.sam2_backend` (SAM 2.1),
registered in :mod:`vos.models.families`; :func:`backend_for` finds a model's backend there.

Coordinates: points are ``(x, y)`` pixels of the original frame and boxes ``[x0, y0, x1, y1]``; maps are row-major
``[y, x]``. A backend never mutates its model (a per-call decoder variant runs on a shallow :func:`module_view`), so
several threads can share one model.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from vos.errors import InputError


class Features(Protocol):
    """One frame through a family's image encoder. ``features``: the image embedding the mask decoder reads
    (``1×C×h×w``); ``original_size``: ``(H, W)`` of the frame."""

    features: torch.Tensor
    original_size: Tuple[int, int]


@dataclass
class DecoderOutput:
    """``low_res``: ``B×K×L×L`` mask logits on the decoder grid (K = 3 multimask outputs, or 1; L = 256 for the
    standard models); ``scores``: ``B×K`` predicted IoU; ``presence``: ``B×1`` object-score logits where the family
    predicts them (SAM 2.1), else None."""

    low_res: torch.Tensor
    scores: torch.Tensor
    presence: Optional[torch.Tensor] = None


class Backend(Protocol):
    """What every family provides (see the module docstring). ``family`` is its name in
    :data:`vos.models.families.FAMILIES`."""

    family: str
    model: nn.Module

    @property
    def device(self) -> torch.device: ...

    @property
    def precision(self) -> str: ...

    @property
    def transformer(self) -> nn.Module: ...

    def encode(self, frame: np.ndarray) -> Features: ...

    def input_tensor(self, image: np.ndarray) -> torch.Tensor: ...

    def decode(self, feats: Features, points: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None,
               boxes: Optional[np.ndarray] = None, mask_input: Optional[torch.Tensor] = None, multimask: bool = True,
               transformer: Optional[nn.Module] = None) -> DecoderOutput: ...

    def upscale(self, feats: Features, low_res: torch.Tensor) -> torch.Tensor: ...

    def postprocess(self, feats: Features, maps: torch.Tensor) -> torch.Tensor: ...

    def prompt_logits(self, feats: Features, prompts: Sequence) -> List[torch.Tensor]: ...


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an RGB ``uint8 H×W×3`` array (a clear :class:`InputError` otherwise)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"{what} must be an RGB uint8 H×W×3 array, got shape {shape} dtype {dtype}")
    if min(image.shape[:2]) < 1:
        raise InputError(f"{what} is empty (shape {image.shape})")
    return image


def module_view(module: nn.Module, **children: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` whose named child modules are replaced by ``children``.

    Parameters, buffers and every other child are shared with ``module``, which is left untouched: the view is a
    per-call variant, safe while other threads run ``module`` itself.
    """
    view = copy.copy(module)
    view.__dict__["_modules"] = {**module._modules, **children}
    return view


def backend_for(model) -> Backend:
    """The backend of a loaded model (a backend is returned as it is, a model is wrapped by its family); a model of
    no registered family is an :class:`InputError`."""
    from vos.models.families import FAMILIES

    for family in FAMILIES.values():
        backend = family.backend(model)
        if backend is not None:
            return backend
    raise InputError(f"expected a model of one of the families {', '.join(FAMILIES)} (a segment_anything / "
                     f"segment_anything_hq Sam or a sam2 SAM2VideoPredictor), got {type(model).__name__}")


def model_family(model) -> str:
    """The family name of a loaded model (``"sam"`` or ``"sam2"``)."""
    return backend_for(model).family
