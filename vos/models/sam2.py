"""SAM 2.1 (Ravi et al. 2024) through the PyPI ``sam2`` package, a snapshot of facebookresearch/sam2 (Apache-2.0).

Names: ``sam2.1_hiera_tiny``, ``sam2.1_hiera_small``, ``sam2.1_hiera_base_plus``, ``sam2.1_hiera_large``. Models are
built by the official ``build_sam2_video_predictor`` (so its inference overrides apply: hole filling of 8 px,
binarised prompt masks for the memory encoder, dynamic multimask fallback) and get their weights through
:mod:`vos.models.checkpoint` (cache, sha256, offline message, ``torch.load(weights_only=True)``). Every computation
on a loaded model goes through its backend, :mod:`vos.models.sam2_backend`.

Checksums: sha256 of the Git LFS objects of the same files. tiny and small are shown on Meta's own model pages
(huggingface.co/facebook/sam2.1-hiera-tiny and -small, file ``sam2.1_hiera_*.pt``); base_plus and large come from
mirrors that carry all four files (huggingface.co/camenduru/sam2-1-hiera, whose tiny and small match Meta's pages;
base_plus also in Promethe-us/sam2, large also in wondervictor/Mask-Adapter and tictag-io-demo/sam2.1-hiera-large).
The file sizes there (156008466, 184416285, 323606802, 898083611 bytes) agree with the rounded sizes (149, 176, 309,
857 MB) that public READMEs list for the dl.fbaipublicfiles.com files.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Union

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

from vos.errors import CheckpointError
from vos.models.spec import ModelSpec

__all__ = ["SAM2_MODELS", "load_sam2", "set_backbone_precision", "backbone_precision"]

_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


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
                     _builder(f"configs/sam2.1/sam2.1_hiera_{short}.yaml"), backend="sam2")


SAM2_MODELS: List[ModelSpec] = [
    _spec("tiny", "t", "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    _spec("small", "s", "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    _spec("base_plus", "b+", "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    _spec("large", "l", "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
]
#: A test-size configuration: hiera-tiny at a 256-pixel input (no official file: ``random_weights`` or a checkpoint;
#: the official tiny weights fit it). Smoke runs, the app's and the command line's tests.
SAM2_MODELS.append(ModelSpec("sam2.1_hiera_tiny_256", "sam2", None, None, None, None,
                             _builder("configs/sam2.1/sam2.1_hiera_t.yaml", ["++model.image_size=256"]),
                             backend="sam2"))
_BY_NAME = {spec.name: spec for spec in SAM2_MODELS}


def load_sam2(name: str, checkpoint: Optional[str] = None, device: Union[str, torch.device, None] = None,
              random_weights: bool = False, seed: int = 0, precision: str = "fp32") -> nn.Module:
    """SAM 2.1 model ``name`` (a ``sam2.sam2_video_predictor.SAM2VideoPredictor``), eval mode, parameters frozen.

    ``checkpoint``: a file path; default: the official file in ``vos.models.cache_dir()``, downloaded (sha256-checked)
    on first use. ``random_weights``: the architecture with weights from ``torch.manual_seed(seed)`` instead.
    ``device``: default ``vos.models.default_device()``. ``precision``: ``"fp32"`` (the official predictor's
    numbers) or ``"bf16"`` (:func:`set_backbone_precision`).
    """
    import torch

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
    """``"bf16"`` or ``"fp32"``: the precision the backend's ``encode`` runs the image encoder of ``model`` in."""
    return "bf16" if model.__dict__.get("_vos_backbone_bf16") else "fp32"
