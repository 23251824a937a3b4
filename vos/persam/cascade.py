"""PerSAM's cascaded post-refinement (spec §2 steps 6-7, §3, §5), one batched implementation for every mode.

After a method-specific first pass, two refinement passes follow for each object (a batch of B objects; an image is
a batch of one): pass B takes the first pass's mask logits as mask prompt (plus a box prompt for PerSAM-F), pass C
the tight box of pass B's mask plus pass B's logits. Each pass keeps the multimask output with the best predicted
IoU. An object whose mask is empty after a pass keeps that pass's logits (all ≤ 0: absent) instead of computing a
box of nothing, which is where the reference code crashes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from vos.models.backend import Backend, DecoderOutput, Features
from vos.persam import prior


@dataclass
class Prompts:
    """Point prompts of B objects: ``points`` ``B×N×2`` ``(x, y)`` pixels, ``labels`` ``B×N`` (1 fg, 0 bg)."""

    points: np.ndarray
    labels: np.ndarray


@dataclass
class Pass:
    """One decoder pass over the objects ``idx`` (indices into the batch): the decoder outputs, the chosen output
    per object, its high-res logits ``len(idx)×H×W`` and the box prompts used (``len(idx)×4``, or None)."""

    idx: np.ndarray
    out: DecoderOutput
    chosen: np.ndarray
    high: torch.Tensor
    boxes: Optional[np.ndarray]


def decode_objects(backend: Backend, emb: Features, prompts: Prompts, idx: np.ndarray,
                   boxes: Optional[np.ndarray], mask_input: Optional[torch.Tensor], batch: int) -> DecoderOutput:
    """Multimask decoder pass for objects ``idx`` in chunks of ``batch`` prompts (``boxes`` ``len(idx)×4`` and
    ``mask_input`` ``len(idx)×1×256×256`` are already restricted to ``idx``)."""
    outs = []
    for i in range(0, len(idx), batch):
        s = slice(i, i + batch)
        outs.append(backend.decode(emb, prompts.points[idx[s]], prompts.labels[idx[s]],
                                   boxes=None if boxes is None else boxes[s],
                                   mask_input=None if mask_input is None else mask_input[s], multimask=True))
    return DecoderOutput(torch.cat([o.low_res for o in outs]), torch.cat([o.scores for o in outs]))


def upscale_objects(backend: Backend, emb: Features, low_res: torch.Tensor, batch: int) -> torch.Tensor:
    """Post-processing in chunks of ``batch`` prompts (bounds the memory of ``B×K×H×W`` float maps)."""
    return torch.cat([backend.upscale(emb, low_res[i:i + batch]) for i in range(0, len(low_res), batch)])


def pick(low_res: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
    """``low_res[b, chosen[b]]`` as ``B×1×256×256``."""
    return low_res[torch.arange(len(chosen)), torch.as_tensor(chosen, dtype=torch.long)][:, None]


def boxes_of(masks: torch.Tensor) -> np.ndarray:
    """Tight boxes ``B×4`` ``[x0, y0, x1, y1]`` of non-empty ``bool B×H×W`` masks."""
    return np.stack([prior.mask_box(m) for m in masks.cpu().numpy()]) if len(masks) else np.zeros((0, 4), int)


def non_empty(logits: torch.Tensor) -> np.ndarray:
    """Indices of the maps of ``B×H×W`` logits with at least one positive pixel."""
    return np.nonzero((logits > 0).flatten(1).any(1).cpu().numpy())[0]


def refine(backend: Backend, emb: Features, prompts: Prompts, idx: np.ndarray, boxes: Optional[np.ndarray],
           mask_input: torch.Tensor, batch: int) -> Pass:
    """A refinement pass: keep the output with the best score, upscale only that one."""
    out = decode_objects(backend, emb, prompts, idx, boxes, mask_input, batch)
    chosen = out.scores.cpu().numpy().argmax(1)
    return Pass(idx, out, chosen, upscale_objects(backend, emb, pick(out.low_res, chosen), batch)[:, 0], boxes)


@dataclass
class Refinement:
    """The two refinement passes of a batch; ``final`` ``B×H×W`` are the objects' final logits."""

    b: Pass
    c: Pass
    final: torch.Tensor

    def scores(self) -> torch.Tensor:
        """``B``: predicted IoU of each object's final output (0 for objects no refinement reached)."""
        scores = torch.zeros(len(self.final))
        for p in (self.b, self.c):
            scores[p.idx] = p.out.scores[torch.arange(len(p.idx)), torch.as_tensor(p.chosen, dtype=torch.long)].cpu()
        return scores


def refine_twice(backend: Backend, emb: Features, prompts: Prompts, idx: np.ndarray,
                 boxes: Optional[np.ndarray], mask_input: torch.Tensor, first: torch.Tensor, batch: int) -> Refinement:
    """Passes B and C for the objects ``idx``. ``boxes`` (``len(idx)×4`` or None) and ``mask_input``
    (``len(idx)×1×256×256``) are pass B's prompts; ``first`` ``B×H×W`` are the first pass's logits, kept for the
    objects no pass reaches."""
    final = first.clone()
    b = refine(backend, emb, prompts, idx, boxes, mask_input, batch)
    final[b.idx] = b.high
    keep = non_empty(b.high)
    c = refine(backend, emb, prompts, b.idx[keep], boxes_of(b.high[keep] > 0), pick(b.out.low_res, b.chosen)[keep],
               batch)
    final[c.idx] = c.high
    return Refinement(b, c, final)
