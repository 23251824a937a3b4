"""The SAM family's backend: SAM and MobileSAM (``segment_anything`` classes) and HQ-SAM (``segment_anything_hq``).

:func:`sam_backend` wraps a ``Sam`` in a :class:`SamBackend` or an :class:`HqSamBackend`, chosen here, once, from the
mask decoder's class. Points and boxes are mapped to the encoder input exactly as ``SamPredictor.predict`` does.
"""
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from vos.errors import InputError
from vos.models.backend import DecoderOutput, check_image, module_view
from vos.models.fast_decoder import predict_masks


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


_DENSE_PE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def dense_pe(prompt_encoder: nn.Module) -> torch.Tensor:
    """``prompt_encoder.get_dense_pe()`` (``1×C×64×64``), computed once per model state: it depends on neither the
    image nor the prompts, yet segment_anything recomputes it (sines and cosines of the whole grid) every call.
    Recomputed when the encoding's random matrix moves or changes (new weights loaded)."""
    matrix = prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    key = (matrix.device, matrix.data_ptr(), matrix._version)
    cached = _DENSE_PE.get(prompt_encoder)
    if cached is None or cached[0] != key:
        cached = _DENSE_PE[prompt_encoder] = (key, prompt_encoder.get_dense_pe())
    return cached[1]


class SamBackend:
    """SAM and MobileSAM (``segment_anything`` classes): encoder, prompt encoder and mask decoder as published."""

    family = "sam"
    #: A short name of the model kind (``"sam"``, ``"hq"``).
    kind = "sam"

    def __init__(self, model: nn.Module):
        self.model = model
        self._resize = ResizeLongestSide(model.image_encoder.img_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def precision(self) -> str:
        """The image encoder's precision (``vos.models.fast_encoder.encoder_precision``)."""
        from vos.models.fast_encoder import encoder_precision

        return encoder_precision(self.model)

    @property
    def transformer(self) -> nn.Module:
        """The mask decoder's two-way transformer (what :meth:`decode` may replace for one call)."""
        return self.model.mask_decoder.transformer

    def input_tensor(self, image: np.ndarray) -> torch.Tensor:
        """``H×W×C`` uint8 → ``1×C×S×S`` float: resized (longest side = encoder input size, segment_anything's
        ``ResizeLongestSide``), normalised with the pixel mean/std and zero-padded, as ``SamPredictor.set_image``."""
        resized = self._resize.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        return self.model.preprocess(x)

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Run the image encoder once on an RGB ``uint8 H×W×3`` image."""
        check_image(image)
        resized = self._resize.get_preprocess_shape(image.shape[0], image.shape[1], self.model.image_encoder.img_size)
        features, interm = self._encoder_output(self.model.image_encoder(self.input_tensor(image)))
        return ImageEmbedding(features, (int(resized[0]), int(resized[1])), (int(image.shape[0]), int(image.shape[1])),
                              interm)

    def _encoder_output(self, out) -> Tuple[torch.Tensor, Optional[List[torch.Tensor]]]:
        return out, None

    @torch.no_grad()
    def decode(self, emb: ImageEmbedding, points: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None,
               boxes: Optional[np.ndarray] = None, mask_input: Optional[torch.Tensor] = None, multimask: bool = True,
               transformer: Optional[nn.Module] = None) -> DecoderOutput:
        """One batched decoder call for B prompts on one image embedding.

        ``points``: ``B×N×2`` ``(x, y)`` pixels of the original image, ``labels``: ``B×N`` (1 fg, 0 bg); ``boxes``:
        ``B×4`` ``[x0, y0, x1, y1]`` pixels; ``mask_input``: ``B×1×256×256`` logits. ``transformer``: a replacement
        for the decoder's two-way transformer in this call only (same call signature).
        """
        point_prompt = None
        if points is not None:
            coords = torch.as_tensor(self._resize.apply_coords(points, emb.original_size), dtype=torch.float,
                                     device=self.device)
            point_prompt = (coords, torch.as_tensor(labels, dtype=torch.int, device=self.device))
        box_prompt = None
        if boxes is not None:
            box_prompt = torch.as_tensor(self._resize.apply_boxes(boxes, emb.original_size), dtype=torch.float,
                                         device=self.device)
        sparse, dense = self.model.prompt_encoder(points=point_prompt, boxes=box_prompt, masks=mask_input)
        decoder = self.model.mask_decoder
        if transformer is not None:
            decoder = module_view(decoder, transformer=transformer)
        low_res, scores = self._run_decoder(decoder, emb, sparse, dense, multimask)
        return DecoderOutput(low_res, scores)

    def _run_decoder(self, decoder: nn.Module, emb: ImageEmbedding, sparse: torch.Tensor, dense: torch.Tensor,
                     multimask: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        masks, iou = predict_masks(decoder, emb.features, dense_pe(self.model.prompt_encoder), sparse, dense)
        sel = slice(1, None) if multimask else slice(0, 1)
        return masks[:, sel], iou[:, sel]

    def postprocess(self, emb: ImageEmbedding, maps: torch.Tensor) -> torch.Tensor:
        """Maps on the padded input grid ``B×K×L×L`` → ``B×K×H×W`` at the original size: SAM's post-processing
        (``Sam.postprocess_masks``: bilinear to the S×S encoder input, crop the padding, bilinear to the image size),
        the same bits, with the first interpolation computed only over the rows and columns the crop keeps (for a
        16:9 frame 44 % of the S×S map is padding). The exactness rests on S = f·L for an integer f: the map's
        first ``ceil(h'/f) + 1`` rows interpolated to f times as many rows use the same scale (1/f) and, for every
        kept row, the same source rows and weights as the full interpolation."""
        size, (h, w) = self.model.image_encoder.img_size, emb.input_size
        side = maps.shape[-1]
        if maps.shape[-2] != side or size % side:
            return self.model.postprocess_masks(maps, emb.input_size, emb.original_size)
        f = size // side
        rows, cols = min(side, -(-h // f) + 1), min(side, -(-w // f) + 1)
        up = F.interpolate(maps[..., :rows, :cols], (rows * f, cols * f), mode="bilinear", align_corners=False)
        return F.interpolate(up[..., :h, :w], emb.original_size, mode="bilinear", align_corners=False)

    def upscale(self, emb: ImageEmbedding, low_res: torch.Tensor) -> torch.Tensor:
        """Low-res logits ``B×K×256×256`` → high-res logits ``B×K×H×W``."""
        return self.postprocess(emb, low_res)

    @torch.no_grad()
    def prompt_logits(self, emb: ImageEmbedding, prompts: Sequence) -> List[torch.Tensor]:
        """Each object's high-res logits ``H×W`` from its clicks / box (``prompts``: :class:`vos.prompts.ObjectPrompt`
        s): a single click with no box takes the multimask output with the best predicted IoU (what ``SamPredictor``
        recommends for one ambiguous click), anything else the single-mask output."""
        logits = []
        for p in prompts:
            points = np.array([[[x, y] for x, y, _ in p.points]]) if p.points else None
            labels = np.array([[label for _, _, label in p.points]]) if p.points else None
            boxes = np.array([p.box]) if p.box is not None else None
            multimask = len(p.points) == 1 and p.box is None
            out = self.decode(emb, points, labels, boxes=boxes, multimask=multimask)
            best = int(out.scores[0].argmax())
            logits.append(self.upscale(emb, out.low_res[:, best:best + 1])[0, 0])
        return logits


class HqSamBackend(SamBackend):
    """HQ-SAM (``segment_anything_hq``): the encoder also returns early-layer features; each of SAM's K outputs is
    corrected with the HQ token's mask (HQ-SAM's own output is the best SAM mask plus the HQ mask; PerSAM needs all
    three scales)."""

    kind = "hq"

    def _encoder_output(self, out) -> Tuple[torch.Tensor, Optional[List[torch.Tensor]]]:
        return out[0], out[1]

    def _run_decoder(self, decoder: nn.Module, emb: ImageEmbedding, sparse: torch.Tensor, dense: torch.Tensor,
                     multimask: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        vit = emb.interm[0].permute(0, 3, 1, 2)
        hq_features = decoder.embedding_encoder(emb.features) + decoder.compress_vit_feat(vit)
        masks, iou = decoder.predict_masks(image_embeddings=emb.features, image_pe=dense_pe(self.model.prompt_encoder),
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           hq_features=hq_features)
        hq = decoder.num_mask_tokens - 1
        sel = slice(1, hq) if multimask else slice(0, 1)
        return masks[:, sel] + masks[:, hq:], iou[:, sel]


def _is_hq_decoder(decoder: nn.Module) -> bool:
    hq = sys.modules.get("segment_anything_hq.modeling.mask_decoder_hq")
    return hq is not None and isinstance(decoder, hq.MaskDecoderHQ)


def wrap(model) -> Optional[SamBackend]:
    """The backend of a SAM-family model (a backend as it is), or None for a model of another family."""
    if isinstance(model, SamBackend):
        return model
    decoder = getattr(model, "mask_decoder", None)
    if decoder is None or not hasattr(model, "prompt_encoder") or not hasattr(model, "image_encoder"):
        return None
    return HqSamBackend(model) if _is_hq_decoder(decoder) else SamBackend(model)


def sam_backend(model) -> SamBackend:
    """The backend of a SAM-family model; any other model is an :class:`InputError` (the still-image engines and
    PerSAM-F need this family)."""
    backend = wrap(model)
    if backend is None:
        raise InputError(f"expected a Segment Anything model (segment_anything / segment_anything_hq Sam), got "
                         f"{type(model).__name__}")
    return backend
