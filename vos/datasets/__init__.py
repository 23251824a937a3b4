"""Dataset layouts on disk (DAVIS 2017, PerSeg, one-shot benchmarks), read lazily.

The loaders are imported on first use (PEP 562), so reading DAVIS imports neither pycocotools nor torch.
"""
from importlib import import_module

_LAZY = {"DavisDataset": "vos.datasets.davis", "DavisSequence": "vos.datasets.davis",
         "COCO20i": "vos.datasets.coco20i", "FSS1000": "vos.datasets.fss", "LVIS92i": "vos.datasets.lvis",
         "PacoPart": "vos.datasets.parts", "PascalPart": "vos.datasets.parts", "PerSegObject": "vos.datasets.perseg",
         "load_perseg": "vos.datasets.perseg"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vos.datasets' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
