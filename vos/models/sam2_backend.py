"""The SAM 2.1 family's backend: every call vos makes into the ``sam2`` package goes through :class:`Sam2Backend`.

Each method is a thin call into the official code: the image encoder (``forward_image``, with ``init_state``'s
preprocessing of a JPEG folder), ``_prepare_backbone_features``, the tracking step (``_track_step`` +
``_encode_memory_in_output``), the conditioning frame's memory (``_encode_new_memory``), hole filling
(``fill_holes_in_mask_scores``), the resize to video resolution (``_get_orig_video_res_output``), and the prompt
encoder + mask decoder as ``SAM2ImagePredictor._predict`` calls them (PerSAM's primitives on SAM 2.1's features:
the decoder's image embedding is the top feature level plus ``no_mem_embed``, as for a frame without memory).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from vos.errors import InputError, MaskError
from vos.models.backend import DecoderOutput, check_image, module_view

# ImageNet statistics of sam2.utils.misc.load_video_frames, float32 as there.
_MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
_STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]

#: What ``_prepare_memory_conditioned_features`` reads of a past frame: ``obj_ptr`` (``B×C``) and, while the frame
#: is within the memory span, ``maskmem_features`` (``B×C_mem×h×w``, bfloat16 as the predictor stores them).
Entry = Dict[str, torch.Tensor]


@dataclass
class Sam2Features:
    """One frame through the image encoder, computed once and shared by every object.

    ``backbone_fpn`` / ``vision_pos_enc``: the official ``forward_image`` lists for a batch of 1 (``1×C×h×w`` each,
    highest resolution first, the two high-resolution levels already projected for the mask decoder);
    ``original_size``: ``(H, W)`` of the frame, the resolution of the output logits; ``features``: the image
    embedding the mask decoder reads on a frame without memory (``1×C×h×w``: the top level plus ``no_mem_embed``).
    """

    backbone_fpn: List[torch.Tensor]
    vision_pos_enc: List[torch.Tensor]
    original_size: Tuple[int, int]
    features: torch.Tensor


@dataclass
class StepOutput:
    """One tracked or conditioned batch of B objects: hole-filled low-res logits ``B×1×h×w``, predicted IoUs
    ``B×K``, object-score logits ``B×1``, and the frame's entry for the memory window."""

    low_res: torch.Tensor
    ious: torch.Tensor
    presence: torch.Tensor
    entry: Entry


class Sam2Backend:
    """A ``SAM2VideoPredictor`` (what ``vos.models.sam2.load_sam2`` returns) behind the model seam."""

    family = "sam2"

    def __init__(self, model: nn.Module):
        if model.training:
            raise InputError("the SAM 2 model is in training mode; call model.eval() first")
        self.model = model
        self._pos_enc: Optional[torch.Tensor] = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def precision(self) -> str:
        from vos.models.sam2 import backbone_precision

        return backbone_precision(self.model)

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    @property
    def transformer(self) -> nn.Module:
        """The mask decoder's two-way transformer (what :meth:`decode` may replace for one call)."""
        return self.model.sam_mask_decoder.transformer

    # --- encoder ---------------------------------------------------------------------------------------------

    def input_tensor(self, image: np.ndarray) -> torch.Tensor:
        """RGB ``uint8 H×W×3`` → ``1×3×S×S``, preprocessed as ``init_state`` does for a JPEG folder (PIL resize to
        ``image_size²``, ``/255`` in float64, cast to float32, float32 ImageNet normalisation)."""
        size = self.image_size
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size))) / 255.0
        return ((torch.from_numpy(pixels).permute(2, 0, 1).float() - _MEAN) / _STD).to(self.device)[None]

    def encode(self, frame: np.ndarray) -> Sam2Features:
        """The image encoder once on an RGB ``uint8 H×W×3`` frame (bfloat16 autocast under ``precision="bf16"``)."""
        check_image(frame, "frame")
        image = self.input_tensor(frame)
        with torch.inference_mode():
            if self.precision == "fp32":
                out = self.model.forward_image(image)
            else:
                with torch.autocast(image.device.type, dtype=torch.bfloat16):
                    out = self.model.forward_image(image)
            fpn = [x.float() for x in out["backbone_fpn"]]
            pos = [x.float() for x in out["vision_pos_enc"]]
            top = fpn[-1] + self.model.no_mem_embed.reshape(1, -1, 1, 1)
        return Sam2Features(fpn, pos, (int(frame.shape[0]), int(frame.shape[1])), top)

    def _vision(self, feats: Sam2Features, batch: int):
        """``(vision_feats, vision_pos_embeds, feat_sizes)`` for ``batch`` objects: the features expanded as
        ``SAM2VideoPredictor._get_image_feature`` does, flattened by ``_prepare_backbone_features``."""
        expanded = {"backbone_fpn": [x.expand(batch, -1, -1, -1) for x in feats.backbone_fpn],
                    "vision_pos_enc": [x.expand(batch, -1, -1, -1) for x in feats.vision_pos_enc]}
        _, vision, pos, sizes = self.model._prepare_backbone_features(expanded)
        return vision, pos, sizes

    # --- PerSAM's primitives and prompts -------------------------------------------------------------------------

    def _points(self, points: np.ndarray, size: Tuple[int, int]) -> torch.Tensor:
        """``(x, y)`` frame pixels → encoder-input coordinates (the predictor's two steps: normalise, scale)."""
        height, width = size
        coords = torch.as_tensor(np.asarray(points, dtype=np.float32))
        return (coords / torch.tensor([width, height]) * self.image_size).to(self.device)

    @torch.no_grad()
    def decode(self, feats: Sam2Features, points: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None,
               boxes: Optional[np.ndarray] = None, mask_input: Optional[torch.Tensor] = None, multimask: bool = True,
               transformer: Optional[nn.Module] = None) -> DecoderOutput:
        """B prompts on one frame through SAM 2.1's prompt encoder and mask decoder, as ``SAM2ImagePredictor``
        does: ``points`` ``B×N×2`` ``(x, y)`` pixels with ``labels`` ``B×N``, ``boxes`` ``B×4`` (as two points
        labelled 2 and 3 before the clicks), ``mask_input`` ``B×1×256×256`` logits; ``transformer``: a replacement
        of the decoder's two-way transformer for this call. Returns the raw low-res logits, IoUs, object scores."""
        size = feats.original_size
        coords = labels_t = None
        if points is not None:
            coords = self._points(points, size)
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
        if boxes is not None:
            box_coords = self._points(np.asarray(boxes).reshape(-1, 2, 2), size)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=self.device).repeat(len(box_coords), 1)
            coords = box_coords if coords is None else torch.cat([box_coords, coords], dim=1)
            labels_t = box_labels if labels_t is None else torch.cat([box_labels, labels_t], dim=1)
        model = self.model
        sparse, dense = model.sam_prompt_encoder(points=None if coords is None else (coords, labels_t), boxes=None,
                                                 masks=mask_input)
        decoder = model.sam_mask_decoder
        if transformer is not None:
            decoder = module_view(decoder, transformer=transformer)
        high_res = feats.backbone_fpn[:2]
        low_res, ious, _, presence = decoder(image_embeddings=feats.features,
                                             image_pe=model.sam_prompt_encoder.get_dense_pe(),
                                             sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                             multimask_output=multimask, repeat_image=sparse.shape[0] > 1,
                                             high_res_features=high_res)
        return DecoderOutput(low_res, ious, presence)

    def upscale(self, feats: Sam2Features, low_res: torch.Tensor) -> torch.Tensor:
        """``B×K×h×w`` logits → ``B×K×H×W`` at frame resolution: the official ``_get_orig_video_res_output``."""
        height, width = feats.original_size
        place = {"device": low_res.device, "video_height": height, "video_width": width}
        with torch.inference_mode():
            return self.model._get_orig_video_res_output(place, low_res)[1]

    def postprocess(self, feats: Sam2Features, maps: torch.Tensor) -> torch.Tensor:
        """Any ``B×K×h×w`` map on the (unpadded, square) decoder grid → frame resolution, as :meth:`upscale`."""
        return self.upscale(feats, maps)

    def prompt_logits(self, feats: Sam2Features, prompts: Sequence) -> List[torch.Tensor]:
        """Each object's logits ``float32 H×W`` from its clicks / box (:class:`vos.prompts.ObjectPrompt` s), as
        ``add_new_points_or_box`` gives them on a frame not tracked before: the box as two points labelled 2 and 3
        before the clicks, coordinates scaled to ``image_size``, SAM 2's multimask choice (one click, no box: the best
        of three), hole filling, bilinear resize to the frame."""
        logits = []
        with torch.inference_mode():
            vision, pos, sizes = self._vision(feats, 1)
            for p in prompts:
                box = [(p.box[0], p.box[1], 2), (p.box[2], p.box[3], 3)] if p.box is not None else []
                points = [*box, *p.points]
                inputs = {"point_coords": self._points([[[x, y] for x, y, _ in points]], feats.original_size),
                          "point_labels": torch.tensor([[label for _, _, label in points]], dtype=torch.int32,
                                                       device=self.device)}
                _, sam_out, _, _ = self.model._track_step(
                    frame_idx=0, is_init_cond_frame=True, current_vision_feats=vision, current_vision_pos_embeds=pos,
                    feat_sizes=sizes, point_inputs=inputs, mask_inputs=None, output_dict=_empty_output_dict(),
                    num_frames=1, track_in_reverse=False, prev_sam_mask_logits=None)
                logits.append(self.upscale(feats, self.fill_holes(sam_out[3]))[0, 0])
        return logits

    # --- SAM 2.1's tracking primitives ---------------------------------------------------------------------------

    def fill_holes(self, low_res: torch.Tensor) -> torch.Tensor:
        """The predictor's hole filling of ``B×1×h×w`` logits (``fill_hole_area``; without sam2's CUDA extension the
        official function warns and returns the logits unchanged, on every platform alike)."""
        from sam2.utils.misc import fill_holes_in_mask_scores

        area = getattr(self.model, "fill_hole_area", 0)
        return fill_holes_in_mask_scores(low_res, area) if area > 0 else low_res

    def mask_input(self, mask: np.ndarray, obj_id: int) -> torch.Tensor:
        """``1×1×S×S`` float mask prompt of a ``bool H×W`` mask, resized as ``add_new_mask`` does (bilinear,
        antialias, ``>= 0.5``)."""
        if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
            raise MaskError(f"mask of object {obj_id} must be a bool H×W array, got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}")
        if not mask.any():
            raise MaskError(f"mask of object {obj_id} is empty")
        size = self.image_size
        prompt = torch.from_numpy(mask)[None, None].float().to(self.device)
        if prompt.shape[-2:] != (size, size):
            prompt = F.interpolate(prompt, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            prompt = (prompt >= 0.5).float()
        return prompt

    def condition(self, feats: Sam2Features, index: int, mask_inputs: torch.Tensor, num_frames: int) -> StepOutput:
        """A conditioning frame for B objects (``mask_inputs`` ``B×1×S×S``): the mask as output
        (``_use_mask_as_output`` inside ``_track_step``), then its memory from the hole-filled low-res mask upsampled,
        binarised as a prompt (``propagate_in_video_preflight``)."""
        size = self.image_size
        with torch.inference_mode():
            vision, pos, sizes = self._vision(feats, len(mask_inputs))
            _, sam_out, _, _ = self.model._track_step(
                frame_idx=index, is_init_cond_frame=True, current_vision_feats=vision, current_vision_pos_embeds=pos,
                feat_sizes=sizes, point_inputs=None, mask_inputs=mask_inputs, output_dict=_empty_output_dict(),
                num_frames=num_frames, track_in_reverse=False, prev_sam_mask_logits=None)
            _, _, ious, low_res, _, obj_ptr, presence = sam_out
            pred = self.fill_holes(low_res)
            high_res = F.interpolate(pred, size=(size, size), mode="bilinear", align_corners=False)
            memory, _ = self.model._encode_new_memory(vision, sizes, high_res, presence, is_mask_from_pts=True)
        return StepOutput(pred, ious, presence, _entry(obj_ptr, memory))

    def track(self, feats: Sam2Features, index: int, cond: Tuple[int, Entry], recent: Dict[int, Entry],
              num_frames: int) -> StepOutput:
        """A tracked frame for B objects with one memory window (``cond``: the conditioning frame's index and entry,
        ``recent``: ``{frame: entry}``): ``_track_step`` on it, then ``_encode_memory_in_output`` (as ``track_step``
        does)."""
        pos_enc = [self.memory_pos_enc().expand(len(cond[1]["obj_ptr"]), -1, -1, -1)]
        window = {"cond_frame_outputs": {cond[0]: {**cond[1], "maskmem_pos_enc": pos_enc}},
                  "non_cond_frame_outputs": {t: {**e, "maskmem_pos_enc": pos_enc} for t, e in recent.items()}}
        with torch.inference_mode():
            vision, pos, sizes = self._vision(feats, len(cond[1]["obj_ptr"]))
            out, sam_out, _, _ = self.model._track_step(
                frame_idx=index, is_init_cond_frame=False, current_vision_feats=vision,
                current_vision_pos_embeds=pos, feat_sizes=sizes, point_inputs=None, mask_inputs=None,
                output_dict=window, num_frames=num_frames, track_in_reverse=False, prev_sam_mask_logits=None)
            _, _, ious, low_res, high_res, obj_ptr, presence = sam_out
            self.model._encode_memory_in_output(vision, sizes, None, True, high_res, presence, out)
            return StepOutput(self.fill_holes(low_res), ious, presence, _entry(obj_ptr, out["maskmem_features"]))

    def memory_pos_enc(self) -> torch.Tensor:
        """``1×C_mem×h×w``: the memory encoder's position encoding (it depends on the memory size only; cached, as
        ``_get_maskmem_pos_enc`` caches it)."""
        if self._pos_enc is None:
            side = self.model.sam_image_embedding_size
            blank = torch.zeros(1, self.model.mem_dim, side, side, device=self.device)
            with torch.inference_mode():
                self._pos_enc = self.model.memory_encoder.position_encoding(blank).clone()
        return self._pos_enc

    def window_spans(self, num_frames: int) -> Tuple[int, int]:
        """``(pointer span, memory span)``: how many frames back frame t reads object pointers (``min(num_frames,
        max_obj_ptrs_in_encoder) − 1``) and memories (``1 + (num_maskmem − 2) · stride``) in
        ``_prepare_memory_conditioned_features``."""
        model = self.model
        ptr_span = min(num_frames, model.max_obj_ptrs_in_encoder) - 1 if model.use_obj_ptrs_in_encoder else 0
        mem_span = 1 + max(model.num_maskmem - 2, 0) * model.memory_temporal_stride_for_eval
        return ptr_span, mem_span if model.num_maskmem > 1 else 0


def _empty_output_dict() -> dict:
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


def _entry(obj_ptr: torch.Tensor, memory: Optional[torch.Tensor]) -> Entry:
    """A frame's stored outputs; memories are kept in bfloat16 as the predictor stores them."""
    entry = {"obj_ptr": obj_ptr}
    if memory is not None:
        entry["maskmem_features"] = memory.to(torch.bfloat16)
    return entry


def wrap(model) -> Optional[Sam2Backend]:
    """The backend of a SAM 2 video predictor (a backend as it is), or None for a model of another family."""
    if isinstance(model, Sam2Backend):
        return model
    import sys

    predictor = sys.modules.get("sam2.sam2_video_predictor")
    if predictor is None or not isinstance(model, predictor.SAM2VideoPredictor):
        base = sys.modules.get("sam2.modeling.sam2_base")
        if base is not None and isinstance(model, base.SAM2Base):
            raise InputError(f"SAM 2 models are tracked through sam2's SAM2VideoPredictor (vos.models.sam2."
                             f"load_sam2 or build_sam2_video_predictor), got {type(model).__name__}")
        return None
    return Sam2Backend(model)
