"""Image → SAM image embedding (resize longest side to 1024, normalise, pad, encode), once per image.

Resizing uses segment_anything's ``ResizeLongestSide`` (torchvision resize of a PIL image = Pillow bilinear,
antialiased when shrinking), exactly as ``SamPredictor.set_image`` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from segment_anything.utils.transforms import ResizeLongestSide

from vos.errors import InputError


@dataclass
class ImageEmbedding:
    """The encoder output for one image.

    ``features``: ``1×C×64×64`` float tensor (C = 256 for real SAM). ``input_size``: ``(h', w')`` of the resized
    image before padding. ``original_size``: ``(H, W)`` of the image. ``interm``: HQ-SAM's early-layer features
    (list of ``1×64×64×D`` tensors), ``None`` for other models.
    """

    features: torch.Tensor
    input_size: Tuple[int, int]
    original_size: Tuple[int, int]
    interm: Optional[List[torch.Tensor]] = None


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an RGB ``uint8 H×W×3`` array (a clear :class:`InputError` otherwise)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"{what} must be an RGB uint8 H×W×3 array, got shape {shape} dtype {dtype}")
    if min(image.shape[:2]) < 1:
        raise InputError(f"{what} is empty (shape {image.shape})")
    return image


def resize_to_input(sam: nn.Module, image: np.ndarray) -> torch.Tensor:
    """``H×W×C`` uint8 → ``1×C×h'×w'`` uint8 tensor on the model's device (longest side = encoder input size)."""
    resized = ResizeLongestSide(sam.image_encoder.img_size).apply_image(image)
    return torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()[None]


@torch.no_grad()
def encode_image(sam: nn.Module, image: np.ndarray) -> ImageEmbedding:
    """Run SAM's image encoder once on an RGB ``uint8 H×W×3`` image."""
    check_image(image)
    x = resize_to_input(sam, image)
    out = sam.image_encoder(sam.preprocess(x))
    features, interm = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
    return ImageEmbedding(features, (int(x.shape[-2]), int(x.shape[-1])), (int(image.shape[0]), int(image.shape[1])),
                          interm)
