"""SAM 2.1 (Ravi et al. 2024) through the PyPI ``sam2`` package, a snapshot of facebookresearch/sam2 (Apache-2.0).

Names: ``sam2.1_hiera_tiny``, ``sam2.1_hiera_small``, ``sam2.1_hiera_base_plus``, ``sam2.1_hiera_large``. Models are
built by the official ``build_sam2_video_predictor`` (so its inference overrides apply: hole filling of 8 px,
binarised prompt masks for the memory encoder, dynamic multimask fallback) and get their weights through
:mod:`vos.models.checkpoint` (cache, sha256, offline message, ``torch.load(weights_only=True)``). Also the
frame-level steps shared by the tracking engine (:mod:`vos.trackers.sam2`) and first-frame prompting, each a thin
call into the official code: :func:`encode_frame`, :func:`vision_inputs`, :func:`fill_holes`, :func:`video_logits`,
:func:`prompt_logits`. ``is_sam2`` is :func:`vos.models.backend.is_sam2`.

Checksums: sha256 of the Git LFS objects of the same files. tiny and small are shown on Meta's own model pages
(huggingface.co/facebook/sam2.1-hiera-tiny and -small, file ``sam2.1_hiera_*.pt``); base_plus and large come from
mirrors that carry all four files (huggingface.co/camenduru/sam2-1-hiera, whose tiny and small match Meta's pages;
base_plus also in Promethe-us/sam2, large also in wondervictor/Mask-Adapter and tictag-io-demo/sam2.1-hiera-large).
The file sizes there (156008466, 184416285, 323606802, 898083611 bytes) agree with the rounded sizes (149, 176, 309,
857 MB) that public READMEs list for the dl.fbaipublicfiles.com files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from vos.errors import CheckpointError
from vos.models.backend import check_image, is_sam2
from vos.models.registry import ModelSpec

__all__ = ["SAM2_MODELS", "load_sam2", "is_sam2", "Sam2Features", "encode_frame", "prompt_logits"]

_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
# ImageNet statistics of sam2.utils.misc.load_video_frames, float32 as there.
_MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
_STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]


def _build_sam():
    """The official ``sam2.build_sam`` module (a :class:`CheckpointError` naming the extra when it is missing)."""
    try:
        import sam2.build_sam as build_sam
    except ImportError as err:
        raise CheckpointError(f"SAM 2.1 models need the sam2 package ({err}): pip install 'vos[sam2]'") from None
    return build_sam


def _builder(config: str, overrides: Sequence[str] = ()) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return _build_sam().build_sam2_video_predictor(config, ckpt_path=None, device="cpu",
                                                       hydra_overrides_extra=list(overrides))
    return build


def _spec(size: str, short: str, sha256: str) -> ModelSpec:
    filename = f"sam2.1_hiera_{size}.pt"
    return ModelSpec(f"sam2.1_hiera_{size}", "sam2", filename, _URL + filename, sha256, None,
                     _builder(f"configs/sam2.1/sam2.1_hiera_{short}.yaml"))


SAM2_MODELS: List[ModelSpec] = [
    _spec("tiny", "t", "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    _spec("small", "s", "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    _spec("base_plus", "b+", "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    _spec("large", "l", "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
]
#: A test-size configuration: hiera-tiny at a 256-pixel input (no official file: ``random_weights`` or a checkpoint;
#: the official tiny weights fit it). Smoke runs, the app's and the command line's tests.
SAM2_MODELS.append(ModelSpec("sam2.1_hiera_tiny_256", "sam2", None, None, None, None,
                             _builder("configs/sam2.1/sam2.1_hiera_t.yaml", ["++model.image_size=256"])))
_BY_NAME = {spec.name: spec for spec in SAM2_MODELS}


def load_sam2(name: str, checkpoint: Optional[str] = None, device: Union[str, torch.device, None] = None,
              random_weights: bool = False, seed: int = 0, precision: str = "fp32") -> nn.Module:
    """SAM 2.1 model ``name`` (a ``sam2.sam2_video_predictor.SAM2VideoPredictor``), eval mode, parameters frozen.

    ``checkpoint``: a file path; default: the official file in ``vos.models.cache_dir()``, downloaded (sha256-checked)
    on first use. ``random_weights``: the architecture with weights from ``torch.manual_seed(seed)`` instead.
    ``device``: default ``vos.models.default_device()``. ``precision``: ``"fp32"`` (the official predictor's
    numbers) or ``"bf16"`` (:func:`set_backbone_precision`).
    """
    from vos.models import default_device
    from vos.models.checkpoint import load_weights, resolve_checkpoint
    from vos.models.precision import check_precision

    device = torch.device(device) if device is not None else default_device()
    check_precision(precision, device)

    try:
        spec = _BY_NAME[name]
    except KeyError:
        raise CheckpointError(f"unknown SAM 2.1 model {name!r}; choose one of: {', '.join(_BY_NAME)}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    if not random_weights:
        load_weights(model, spec, resolve_checkpoint(spec, checkpoint))
    set_backbone_precision(model, precision)
    model.requires_grad_(False)
    return model.to(device).eval()


def set_backbone_precision(model: nn.Module, precision: str) -> None:
    """Run the image encoder of SAM 2 ``model`` (``forward_image``: Hiera trunk, FPN neck, the decoder's two
    projections) under ``torch.autocast`` in bfloat16 (``"bf16"``; features cast back to float32) or in float32
    (``"fp32"``). Memory attention, memory encoder and mask decoder stay float32: on CPU, hiera-tiny's encoder at 1024
    measured 1.5-1.7x faster in bfloat16, its memory attention 1.03-1.09x (2 threads, Zen 4)."""
    model.__dict__["_vos_backbone_bf16"] = precision == "bf16"


def backbone_precision(model: nn.Module) -> str:
    """``"bf16"`` or ``"fp32"``: the precision :func:`encode_frame` runs the image encoder of ``model`` in."""
    return "bf16" if model.__dict__.get("_vos_backbone_bf16") else "fp32"


@dataclass
class Sam2Features:
    """One frame through the image encoder, computed once and shared by every object.

    ``backbone_fpn`` / ``vision_pos_enc``: the official ``forward_image`` lists for a batch of 1 (``1×C×h×w`` each,
    highest resolution first, the two high-resolution levels already projected for the mask decoder);
    ``video_size``: ``(H, W)`` of the frame, the resolution of the output logits.
    """

    backbone_fpn: List[torch.Tensor]
    vision_pos_enc: List[torch.Tensor]
    video_size: Tuple[int, int]


def encode_frame(model: nn.Module, frame: np.ndarray) -> Sam2Features:
    """Run the image encoder on an RGB ``uint8 H×W×3`` frame, preprocessed as ``init_state`` does for a JPEG folder
    (PIL resize to ``image_size²``, ``/255`` in float64, cast to float32, float32 ImageNet normalisation)."""
    check_image(frame, "frame")
    size = model.image_size
    pixels = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((size, size))) / 255.0
    image = (torch.from_numpy(pixels).permute(2, 0, 1).float() - _MEAN) / _STD
    image = image.to(model.device)[None]
    with torch.inference_mode():
        if backbone_precision(model) == "fp32":
            out = model.forward_image(image)
        else:
            with torch.autocast(image.device.type, dtype=torch.bfloat16):
                out = model.forward_image(image)
    return Sam2Features([x.float() for x in out["backbone_fpn"]], [x.float() for x in out["vision_pos_enc"]],
                        tuple(frame.shape[:2]))


def vision_inputs(model: nn.Module, feats: Sam2Features, batch: int):
    """``(vision_feats, vision_pos_embeds, feat_sizes)`` for ``batch`` objects: the features expanded as
    ``SAM2VideoPredictor._get_image_feature`` does, flattened by ``_prepare_backbone_features``."""
    expanded = {"backbone_fpn": [x.expand(batch, -1, -1, -1) for x in feats.backbone_fpn],
                "vision_pos_enc": [x.expand(batch, -1, -1, -1) for x in feats.vision_pos_enc]}
    _, vision, pos, sizes = model._prepare_backbone_features(expanded)
    return vision, pos, sizes


def fill_holes(model: nn.Module, low_res: torch.Tensor) -> torch.Tensor:
    """The predictor's hole filling of ``B×1×h×w`` logits (``fill_hole_area``; without sam2's CUDA extension the
    official function warns and returns the logits unchanged, on every platform alike)."""
    from sam2.utils.misc import fill_holes_in_mask_scores

    area = getattr(model, "fill_hole_area", 0)
    return fill_holes_in_mask_scores(low_res, area) if area > 0 else low_res


def video_logits(model: nn.Module, low_res: torch.Tensor, video_size: Tuple[int, int]) -> torch.Tensor:
    """``B×1×H×W`` logits at video resolution from ``B×1×h×w``: the official ``_get_orig_video_res_output``."""
    height, width = video_size
    place = {"device": low_res.device, "video_height": height, "video_width": width}
    with torch.inference_mode():
        return model._get_orig_video_res_output(place, low_res)[1]


def prompt_logits(model: nn.Module, frame: np.ndarray, prompts: Sequence,
                  features: Optional[Sam2Features] = None) -> List[torch.Tensor]:
    """Each object's logits ``float32 H×W`` on ``frame`` from its clicks / box (``prompts``: objects with ``points``
    ``((x, y, label), …)`` in pixels and an optional ``box`` ``(x0, y0, x1, y1)``), as ``add_new_points_or_box``
    gives them on a frame not tracked before: the box as two points labelled 2 and 3 before the clicks, coordinates
    scaled to ``image_size``, SAM 2's multimask choice (one click, no box: the best of three), hole filling,
    bilinear resize to the frame. ``features``: the frame's, when already computed (the encoder runs once)."""
    feats = features if features is not None else encode_frame(model, frame)
    height, width = feats.video_size
    logits = []
    with torch.inference_mode():
        vision, pos, sizes = vision_inputs(model, feats, 1)
        for p in prompts:
            box = [(p.box[0], p.box[1], 2), (p.box[2], p.box[3], 3)] if p.box is not None else []
            points = [*box, *p.points]
            coords = torch.tensor([[[x, y] for x, y, _ in points]], dtype=torch.float32)
            coords = coords / torch.tensor([width, height]) * model.image_size     # the predictor's two steps
            labels = torch.tensor([[label for _, _, label in points]], dtype=torch.int32)
            inputs = {"point_coords": coords.to(model.device), "point_labels": labels.to(model.device)}
            _, sam_out, _, _ = model._track_step(
                frame_idx=0, is_init_cond_frame=True, current_vision_feats=vision, current_vision_pos_embeds=pos,
                feat_sizes=sizes, point_inputs=inputs, mask_inputs=None,
                output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}, num_frames=1,
                track_in_reverse=False, prev_sam_mask_logits=None)
            logits.append(video_logits(model, fill_holes(model, sam_out[3]), feats.video_size)[0, 0])
    return logits
