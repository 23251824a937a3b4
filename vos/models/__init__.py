"""Models: official checkpoints (SAM, MobileSAM, HQ-SAM, SAM 2.1), cache + download, test-size configurations, and
the seam through which the engines use them (:mod:`vos.models.backend`)."""
from vos.lazy import lazy_attributes

_LAZY = {"load_model": "vos.models.load", "load_sam": "vos.models.load", "default_device": "vos.models.load",
         "build_tiny_sam": "vos.models.tiny", "MODELS": "vos.models.registry", "ModelSpec": "vos.models.spec",
         "cache_dir": "vos.models.checkpoint", "encoder_kind": "vos.models.fast_encoder",
         "encoder_precision": "vos.models.fast_encoder", "use_fast_encoder": "vos.models.fast_encoder",
         "use_stock_encoder": "vos.models.fast_encoder", "PRECISIONS": "vos.models.precision",
         "check_precision": "vos.models.precision"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
