"""Dataset layouts on disk (DAVIS 2017, PerSeg, one-shot benchmarks), read lazily."""
from vos.datasets.davis import DavisDataset, DavisSequence  # noqa: F401
from vos.datasets.coco20i import COCO20i  # noqa: F401
from vos.datasets.fss import FSS1000  # noqa: F401
from vos.datasets.lvis import LVIS92i  # noqa: F401
from vos.datasets.parts import PacoPart, PascalPart  # noqa: F401
from vos.datasets.perseg import PerSegObject, load_perseg  # noqa: F401
