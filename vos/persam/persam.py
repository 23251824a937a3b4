"""Training-free PerSAM (spec §2): location prior, target-guided stage 1, two cascaded refinements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from vos.errors import InputError, MaskError
from vos.models.backend import Backend, Features, check_image
from vos.models.sam_backend import ImageEmbedding, SamBackend, sam_backend
from vos.persam import prior
from vos.persam.cascade import Prompts, refine_twice
from vos.persam.guidance import Guidance, guided_transformer
from vos.persam.result import PerSAMResult


@dataclass
class Reference:
    """What PerSAM keeps of the reference (computed once): grid mask ``bool h×w``, raw mean embedding ``1×1×C``
    (semantic prompt), unit target ``1×C`` and, for PerSAM-F, the max+mean unit target ``1×C``. A reference pooled
    from several photos (:mod:`vos.trackers.redetect`) has no grid and no max+mean target (None)."""

    grid: Optional[torch.Tensor]
    embedding: torch.Tensor
    target: torch.Tensor
    target_max_mean: Optional[torch.Tensor]


def make_reference(backend: SamBackend, emb: ImageEmbedding, mask_rgb: np.ndarray) -> Reference:
    """Reference features from an encoded reference image and its 3-channel mask (``uint8 H×W×3``)."""
    grid = prior.grid_mask(backend, mask_rgb, tuple(emb.features.shape[-2:]))
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


def result_of(final: torch.Tensor, score: float, prompts: Prompts, sim: torch.Tensor, trace: Optional[dict]
              ) -> PerSAMResult:
    """The :class:`PerSAMResult` of a batch of one: ``final`` ``1×H×W`` logits, ``sim`` the location confidence."""
    logits = final[0]
    return PerSAMResult(mask=(logits > 0).cpu().numpy(), logits=logits.float().cpu().numpy(), score=score,
                        points=prompts.points[0], labels=prompts.labels[0], peak=float(sim.max()), trace=trace or {})


def stage_trace(backend: SamBackend, emb: ImageEmbedding, passes: dict) -> dict:
    """Trace entries of the refinement passes of a batch of one (fixture names: ``<stage>``, ``<stage>_best``,
    ``<stage>_masks``, ``<stage>_box``); a pass that did not run (empty mask before it) has none."""
    t = {}
    for name, p in passes.items():
        if len(p.idx):
            t.update({name: p.out, f"{name}_best": int(p.chosen[0]),
                      f"{name}_masks": backend.upscale(emb, p.out.low_res)[0] > 0,
                      f"{name}_box": None if p.boxes is None else p.boxes[0]})
    return t


@torch.no_grad()
def persam_segment(backend: Backend, ref: Reference, emb: Features, trace: bool = False) -> PerSAMResult:
    """Segment the reference object in an encoded test image (spec §2 steps 2-7), on any family's backend (the
    paper's is SAM's; :mod:`vos.models.backend`).

    Only the high-res masks that the algorithm uses are computed (the chosen one per refinement), unless ``trace``
    asks for every intermediate (the names of the conformance fixtures).
    """
    sim_grid, sim = prior.similarity(backend, ref.target, prior.normalized_cells(emb.features), emb)
    sim = sim[0]
    pos, neg = prior.top_points(sim, 1), prior.top_points(sim, 1, largest=False)
    prompts = Prompts(np.concatenate([pos, neg])[None], np.array([[1, 0]]))
    bias = prior.attention_bias(sim, tuple(emb.features.shape[-2:]))
    s1 = backend.decode(emb, prompts.points, prompts.labels, multimask=False,
                        transformer=guided_transformer(backend.transformer, Guidance(bias, ref.embedding)))
    r = refine_twice(backend, emb, prompts, np.arange(1), None, s1.low_res,
                     torch.full((1,) + emb.original_size, -1.0, device=backend.device), batch=1)
    t = None
    if trace:
        t = dict(sim_grid=sim_grid[0], sim_full=sim, attn_bias=bias.reshape(sim_grid.shape[-2:]),
                 positive_point_xy=pos[0], negative_point_xy=neg[0], stage1=s1,
                 stage1_mask=backend.upscale(emb, s1.low_res)[0, 0] > 0)
        t.update(stage_trace(backend, emb, {"stage2": r.b, "stage3": r.c}))
    return result_of(r.final, float(r.scores()[0]), prompts, sim, t)


class PerSAM:
    """Training-free PerSAM on a SAM model (``segment_anything.modeling.Sam`` or what ``vos.load_sam`` returns).

    >>> persam = PerSAM(sam).set_reference(image, mask)   # image uint8 H×W×3 RGB, mask H×W (non-zero = object)
    >>> result = persam.segment(other_image)              # PerSAMResult

    Each instance keeps its own reference; several instances (in several threads) may share one model.
    """

    def __init__(self, sam):
        self.backend = sam_backend(sam)
        self.reference: Optional[Reference] = None

    def set_reference(self, image: np.ndarray, mask: np.ndarray, mask_value: int = 128) -> "PerSAM":
        """Encode the reference once and keep its target features.

        ``mask``: ``H×W`` (non-zero = object) or ``H×W×3`` in the PerSeg convention (foreground R = 128). 2-D masks
        are painted with R = ``mask_value``; the reference grid keeps cells whose pooled R exceeds 123.675 (spec §1.1).
        """
        mask_rgb = check_reference(image, mask, mask_value)
        self.reference = make_reference(self.backend, self.backend.encode(image), mask_rgb)
        return self

    def _require_reference(self) -> Reference:
        if self.reference is None:
            raise InputError("no reference: call set_reference(image, mask) first")
        return self.reference

    def segment(self, image: np.ndarray, trace: bool = False) -> PerSAMResult:
        """Segment the personalised object in an RGB ``uint8 H×W×3`` image."""
        ref = self._require_reference()
        return persam_segment(self.backend, ref, self.backend.encode(image), trace)
