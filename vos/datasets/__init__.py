"""Dataset layouts on disk (DAVIS 2017, PerSeg, one-shot benchmarks), read lazily.

The loaders are imported on first use (PEP 562), so reading DAVIS imports neither pycocotools nor torch.
"""
from vos.lazy import lazy_attributes

_LAZY = {"DavisDataset": "vos.datasets.davis", "DavisSequence": "vos.datasets.davis",
         "COCO20i": "vos.datasets.coco20i", "FSS1000": "vos.datasets.fss", "LVIS92i": "vos.datasets.lvis",
         "PacoPart": "vos.datasets.parts", "PascalPart": "vos.datasets.parts", "PerSegObject": "vos.datasets.perseg",
         "load_perseg": "vos.datasets.perseg"}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
