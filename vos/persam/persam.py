"""Training-free PerSAM (spec §2): location prior, target-guided stage 1, two cascaded refinements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from vos.errors import InputError, MaskError
from vos.persam import prior
from vos.persam.decoder import Guidance, decode, upscale
from vos.persam.embedding import ImageEmbedding, check_image, encode_image
from vos.persam.result import PerSAMResult


@dataclass
class Reference:
    """What PerSAM keeps of the reference (computed once): grid mask ``bool h×w``, raw mean embedding ``1×1×C``
    (semantic prompt), unit target ``1×C`` and, for PerSAM-F, the max+mean unit target ``1×C``."""

    grid: torch.Tensor
    embedding: torch.Tensor
    target: torch.Tensor
    target_max_mean: torch.Tensor


def make_reference(sam: nn.Module, emb: ImageEmbedding, mask_rgb: np.ndarray) -> Reference:
    """Reference features from an encoded reference image and its 3-channel mask (``uint8 H×W×3``)."""
    grid = prior.grid_mask(sam, mask_rgb, tuple(emb.features.shape[-2:]))
    cells = prior.reference_cells(emb.features, grid)
    embedding, target = prior.mean_target(cells)
    return Reference(grid, embedding, target, prior.max_mean_target(cells))


def check_reference(image: np.ndarray, mask: np.ndarray, mask_value: int) -> np.ndarray:
    """Validate an image/mask pair; returns the 3-channel reference mask."""
    check_image(image, "reference image")
    mask = np.asarray(mask)
    if mask.shape[:2] != image.shape[:2]:
        raise InputError(f"reference mask size {mask.shape[1]}×{mask.shape[0]} (W×H) differs from the reference "
                         f"image size {image.shape[1]}×{image.shape[0]}")
    mask_rgb = prior.reference_mask_rgb(mask, mask_value)
    if not mask_rgb.any():
        raise MaskError("reference mask has no foreground pixel")
    return mask_rgb


def _best(scores: torch.Tensor) -> int:
    """First index of the maximum (numpy ``argmax`` semantics)."""
    return int(np.argmax(scores.cpu().numpy()))


@torch.no_grad()
def persam_segment(sam: nn.Module, ref: Reference, emb: ImageEmbedding, trace: bool = False) -> PerSAMResult:
    """Segment the reference object in an encoded test image (spec §2 steps 2-7).

    Only the high-res masks that the algorithm uses are computed (the chosen one per refinement), unless ``trace``
    asks for every intermediate (the names of the conformance fixtures).
    """
    t = {} if trace else None
    sim_grid, sim = prior.similarity(sam, ref.target, prior.normalized_cells(emb.features), emb)
    sim = sim[0]
    pos, neg = prior.top_points(sim, 1), prior.top_points(sim, 1, largest=False)
    points = np.concatenate([pos, neg])[None]
    labels = np.array([[1, 0]])
    bias = prior.attention_bias(sim, tuple(emb.features.shape[-2:]))

    s1 = decode(sam, emb, points, labels, multimask=False, guidance=Guidance(bias, ref.embedding))
    s2 = decode(sam, emb, points, labels, mask_input=s1.low_res, multimask=True)
    b2 = _best(s2.scores[0])
    mask2 = upscale(sam, emb, s2.low_res[:, b2:b2 + 1])[0, 0] > 0
    box = prior.mask_box(mask2.cpu().numpy())
    s3 = decode(sam, emb, points, labels, boxes=box[None], mask_input=s2.low_res[:, b2:b2 + 1], multimask=True)
    b3 = _best(s3.scores[0])
    logits = upscale(sam, emb, s3.low_res[:, b3:b3 + 1])[0, 0]
    if t is not None:
        t.update(sim_grid=sim_grid[0], sim_full=sim, attn_bias=bias.reshape(sim_grid.shape[-2:]),
                 positive_point_xy=pos[0], negative_point_xy=neg[0], stage1=s1,
                 stage1_mask=upscale(sam, emb, s1.low_res)[0, 0] > 0, stage2=s2, stage2_best=b2,
                 stage2_masks=upscale(sam, emb, s2.low_res)[0] > 0, stage3_box=box, stage3=s3, stage3_best=b3,
                 stage3_masks=upscale(sam, emb, s3.low_res)[0] > 0)
    return PerSAMResult(mask=(logits > 0).cpu().numpy(), logits=logits.float().cpu().numpy(),
                        score=float(s3.scores[0, b3]), points=points[0], labels=labels[0], trace=t or {})


class PerSAM:
    """Training-free PerSAM on a SAM model (``segment_anything.modeling.Sam`` or what ``vos.load_sam`` returns).

    >>> persam = PerSAM(sam).set_reference(image, mask)   # image uint8 H×W×3 RGB, mask H×W (non-zero = object)
    >>> result = persam.segment(other_image)              # PerSAMResult
    """

    def __init__(self, sam: nn.Module):
        self.sam = sam
        self.reference: Optional[Reference] = None

    def set_reference(self, image: np.ndarray, mask: np.ndarray, mask_value: int = 128) -> "PerSAM":
        """Encode the reference once and keep its target features.

        ``mask``: ``H×W`` (non-zero = object) or ``H×W×3`` in the PerSeg convention (foreground R = 128). 2-D masks
        are painted with R = ``mask_value``; the reference grid keeps cells whose pooled R exceeds 123.675 (spec §1.1).
        """
        mask_rgb = check_reference(image, mask, mask_value)
        self.reference = make_reference(self.sam, encode_image(self.sam, image), mask_rgb)
        return self

    def _require_reference(self) -> Reference:
        if self.reference is None:
            raise InputError("no reference: call set_reference(image, mask) first")
        return self.reference

    def segment(self, image: np.ndarray, trace: bool = False) -> PerSAMResult:
        """Segment the personalised object in an RGB ``uint8 H×W×3`` image."""
        ref = self._require_reference()
        return persam_segment(self.sam, ref, encode_image(self.sam, image), trace)
