"""Dataset layouts on disk (DAVIS 2017, PerSeg, one-shot benchmarks), read lazily."""
from vos.datasets.davis import DavisDataset, DavisSequence  # noqa: F401
