"""FSS-1000 one-shot test episodes (HSNet protocol; ``shared/specs/benchmarks.md`` §3).

Layouts: ``<root>/FSS-1000/<class>/`` (HSNet) or ``<root>/FSS-1000/data/<class>/`` (Matcher), each class holding
``1.jpg … 10.jpg`` with same-stem ``.png`` masks (foreground iff 8-bit grey ≥ 128).

The 240 test class names are *not* shipped with vos (they could not be reproduced exactly here): they are read
from the HSNet / Matcher split file, looked for at ``<root>/FSS-1000/splits/test.txt`` (Matcher),
``<root>/FSS-1000/test.txt`` and ``<root>/splits/fss/test.txt`` (HSNet's ``data/splits/fss``), or given
explicitly (``split_file``). Windows line endings are accepted; empty lines are ignored.

Episodes: classes sorted by code point, files of a class in plain string order (1, 10, 2, …, 9); every image is
the query once; each support is a one-element choice from 1..10 (without replacement, legacy RNG seeded with 0),
redrawn while it equals the query. Supports may repeat each other for shot > 1.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from vos.io.images import read_rgb
from vos.errors import DatasetError, InputError
from vos.datasets.episodes import Episode, check_fold_shot, choose_index, episode_rng

TEST_CLASSES = 240
SPLIT_CANDIDATES = ("FSS-1000/splits/test.txt", "FSS-1000/test.txt", "splits/fss/test.txt")


@dataclass(frozen=True)
class FssSample:
    """One image of a class: ``key`` = ``<class>/<stem>`` (written to results)."""

    key: str
    image: Path
    mask: Path


def find_class_root(root: Union[str, Path]) -> Path:
    """``<root>/FSS-1000/data`` if it exists (Matcher), else ``<root>/FSS-1000`` (HSNet)."""
    base = Path(root) / "FSS-1000"
    if (base / "data").is_dir():
        return base / "data"
    if base.is_dir():
        return base
    raise DatasetError(f"{base}: FSS-1000 folder not found (expected <root>/FSS-1000/<class>/ or "
                       f"<root>/FSS-1000/data/<class>/)")


def find_split_file(root: Union[str, Path], split_file: Optional[Union[str, Path]] = None) -> Path:
    """The test split file: ``split_file`` if given, else the first of :data:`SPLIT_CANDIDATES` under ``root``."""
    if split_file is not None:
        path = Path(split_file)
        if not path.is_file():
            raise DatasetError(f"{path}: FSS-1000 split file not found")
        return path
    for rel in SPLIT_CANDIDATES:
        if (Path(root) / rel).is_file():
            return Path(root) / rel
    tried = ", ".join(str(Path(root) / rel) for rel in SPLIT_CANDIDATES)
    raise DatasetError(f"FSS-1000 test split file not found (tried {tried}); vos does not ship the 240 test class "
                       f"names: copy HSNet's data/splits/fss/test.txt there or pass --split-file")


def read_split(path: Union[str, Path]) -> List[str]:
    """Class names of a split file, one per line; ``\\r`` stripped, empty lines ignored, file order kept."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read split file ({err})") from err
    names = [line.strip("\r") for line in text.split("\n")]
    names = [n for n in names if n.strip()]
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: a class name is listed twice")
    return names


def read_fss_mask(path: Union[str, Path]) -> np.ndarray:
    """``bool H×W``: 8-bit grayscale (Pillow ``L``) ≥ 128."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L")) >= 128
    except FileNotFoundError:
        raise InputError(f"{path}: mask not found") from None
    except OSError as err:
        raise InputError(f"{path}: cannot decode mask ({err})") from err


def class_stems(class_dir: Path) -> List[str]:
    """Stems of the class's ``.jpg`` images in plain string order (``1, 10, 2, …, 9``)."""
    if not class_dir.is_dir():
        raise DatasetError(f"{class_dir}: FSS-1000 class folder not found")
    # Sort the file names (not the stems) and keep names whose second dot-field is "jpg", as HSNet does.
    names = sorted(p.name for p in class_dir.iterdir() if not p.name.startswith("."))
    stems = [n.split(".")[0] for n in names if len(n.split(".")) > 1 and n.split(".")[1] == "jpg"]
    if not stems:
        raise DatasetError(f"{class_dir}: no .jpg image")
    return stems


def fss_episodes(classes: Sequence[Tuple[str, Sequence[str]]], shot: int = 1,
                 count: Optional[int] = None) -> Iterator[Tuple[int, str, List[str]]]:
    """``(class_index, query_stem, support_stems)`` of the protocol's episodes, in order.

    ``classes``: ``(name, stems in string order)`` sorted by name. Support stems are ``str(k)`` for k drawn from
    1..10. The draws depend only on the RNG and the query sequence, not on the class names. ``count`` stops early
    (the first ``count`` episodes are the same as in a full run).
    """
    rng = episode_rng()
    produced = 0
    for class_index, (_name, stems) in enumerate(classes):
        for query in stems:
            if count is not None and produced >= count:
                return
            supports: List[str] = []
            while len(supports) < shot:
                candidate = str(choose_index(rng, 10) + 1)
                if candidate != query:
                    supports.append(candidate)
            yield class_index, query, supports
            produced += 1


class FSS1000:
    """FSS-1000 test split (one fold), ``shot`` supports per episode; 2400 episodes when complete."""

    name = "fss"
    folds = 1

    def __init__(self, root: Union[str, Path], fold: int = 0, shot: int = 1,
                 split_file: Optional[Union[str, Path]] = None):
        check_fold_shot("FSS-1000", fold, 1, shot)
        self.root, self.fold, self.shot = Path(root), fold, shot
        self.class_root = find_class_root(root)
        self.split_file = find_split_file(root, split_file)
        self.class_names = sorted(read_split(self.split_file))
        if len(self.class_names) != TEST_CLASSES:
            warnings.warn(f"{self.split_file}: {len(self.class_names)} classes; the FSS-1000 test split has "
                          f"{TEST_CLASSES}")
        self._stems = [class_stems(self.class_root / c) for c in self.class_names]

    def __len__(self) -> int:
        """Episodes in the full protocol: one per test image."""
        return sum(len(s) for s in self._stems)

    def sample(self, class_name: str, stem: str) -> FssSample:
        folder = self.class_root / class_name
        return FssSample(f"{class_name}/{stem}", folder / f"{stem}.jpg", folder / f"{stem}.png")

    def episodes(self, count: Optional[int] = None) -> Iterator[Episode]:
        """The protocol's episodes in index order (the first ``count`` only, if given)."""
        classes = list(zip(self.class_names, self._stems))
        for index, (class_index, query, supports) in enumerate(fss_episodes(classes, self.shot, count)):
            name = self.class_names[class_index]
            yield Episode(index, class_index, self.sample(name, query),
                          tuple(self.sample(name, s) for s in supports))

    def load(self, sample: FssSample) -> Tuple[np.ndarray, np.ndarray]:
        """``(uint8 H×W×3 RGB image, bool H×W mask)`` at the original resolution."""
        if not sample.image.is_file():
            raise DatasetError(f"{sample.image}: FSS-1000 image not found")
        image, mask = read_rgb(sample.image), read_fss_mask(sample.mask)
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"{sample.mask}: mask size {mask.shape[::-1]} differs from its image "
                               f"{image.shape[1::-1]} (W×H)")
        return image, mask

    def protocol(self) -> dict:
        """Fold-independent dataset settings recorded in every result file."""
        return {"dataset": "FSS-1000", "layout": str(self.class_root), "split_file": str(self.split_file),
                "shot": self.shot, "folds": 1,
                "episode_rule": "every test image is the query once; classes by code point, files in string order; "
                                "support = choice(1..10) redrawn while equal to the query"}
