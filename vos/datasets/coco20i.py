"""COCO-20i one-shot episodes (HSNet convention; ``shared/specs/benchmarks.md`` §6).

Layout (Matcher's ``<root>/COCO2014/``, or ``<root>`` itself if it has no ``COCO2014`` folder): COCO-2014 images
``train2014/`` and ``val2014/``; HSNet's class-index masks ``annotations/<split>/<stem>.png`` (pixel = class index
0-79 + 1); class → image lists ``splits/val/fold<F>.pkl`` (HSNet's repository keeps them at
``splits/coco/val/fold<F>.pkl``, also accepted under ``<root>``). Pickles are loaded with
:mod:`vos.datasets.safe_pickle`.

Folds are interleaved: fold f tests classes f, f+4, …, f+76. Episodes: 1000 per fold; class = choice of the fold's
20 classes, query = choice of its images, each support a choice redrawn while equal to the query.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from vos.datasets import safe_pickle
from vos.io.images import read_rgb
from vos.errors import DatasetError
from vos.datasets.episodes import Episode, check_fold_shot, choose_index, episode_rng

FOLDS = 4
CLASSES = 80
EPISODES = 1000


@dataclass(frozen=True)
class CocoSample:
    """One image: ``key`` = path relative to the COCO-2014 root (as in the fold pickle); ``value`` = class + 1."""

    key: str
    image: Path
    mask: Path
    value: int


def fold_class_ids(fold: int) -> List[int]:
    """0-based COCO class indices of fold ``fold``: ``fold, fold + 4, …, fold + 76``."""
    return [fold + FOLDS * v for v in range(CLASSES // FOLDS)]


class COCO20i:
    """One fold of COCO-20i (1000 episodes)."""

    name = "coco20i"
    folds = FOLDS

    def __init__(self, root: Union[str, Path], fold: int, shot: int = 1):
        check_fold_shot("COCO-20i", fold, FOLDS, shot)
        self.root, self.fold, self.shot = Path(root), fold, shot
        self.base = self.root / "COCO2014" if (self.root / "COCO2014").is_dir() else self.root
        candidates = [self.base / "splits" / "val" / f"fold{fold}.pkl",
                      self.root / "splits" / "coco" / "val" / f"fold{fold}.pkl"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise DatasetError(f"COCO-20i fold list not found (tried {', '.join(map(str, candidates))})")
        self.split_path = found[0]
        lists = safe_pickle.load(self.split_path)
        if not isinstance(lists, dict):
            raise DatasetError(f"{self.split_path}: expected a dict class index → image paths")
        self.class_ids = fold_class_ids(fold)
        self.images: List[List[str]] = []
        for cid in self.class_ids:
            if cid not in lists or not lists[cid]:
                raise DatasetError(f"{self.split_path}: no image list for class {cid} of fold {fold}")
            self.images.append([str(p) for p in lists[cid]])
        self.class_names = [str(cid) for cid in self.class_ids]

    def __len__(self) -> int:
        return EPISODES

    def _sample(self, class_id: int, rel: str) -> CocoSample:
        stem = rel[:rel.index(".jpg")] if ".jpg" in rel else str(Path(rel).with_suffix(""))
        return CocoSample(rel, self.base / rel, self.base / "annotations" / f"{stem}.png", class_id + 1)

    def episodes(self, count: Optional[int] = None) -> Iterator[Episode]:
        rng = episode_rng()
        total = EPISODES if count is None else min(count, EPISODES)
        for index in range(total):
            class_index = choose_index(rng, len(self.class_ids))
            class_id, names = self.class_ids[class_index], self.images[class_index]
            query = names[choose_index(rng, len(names))]
            supports: List[str] = []
            while len(supports) < self.shot:
                candidate = names[choose_index(rng, len(names))]
                if candidate != query:
                    supports.append(candidate)
            yield Episode(index, class_index, self._sample(class_id, query),
                          tuple(self._sample(class_id, s) for s in supports))

    def load(self, sample: CocoSample) -> Tuple[np.ndarray, np.ndarray]:
        """``(uint8 H×W×3 RGB image, bool H×W)``: mask = PNG value equals class index + 1."""
        for path in (sample.image, sample.mask):
            if not path.is_file():
                raise DatasetError(f"{path}: COCO-20i file not found")
        image = read_rgb(sample.image)
        try:
            with Image.open(sample.mask) as img:
                labels = np.asarray(img)
        except OSError as err:
            raise DatasetError(f"{sample.mask}: cannot decode mask ({err})") from err
        if labels.ndim != 2 or labels.shape != image.shape[:2]:
            raise DatasetError(f"{sample.mask}: expected a single-channel class-index PNG of the image's size "
                               f"{image.shape[1]}×{image.shape[0]} (W×H), got shape {labels.shape}")
        return image, labels == sample.value

    def protocol(self) -> dict:
        """Fold-independent dataset settings recorded in every result file."""
        return {"dataset": "COCO-20i", "split_file": str(self.split_path), "shot": self.shot,
                "fold_split": "interleaved (fold f: classes f, f+4, ..., f+76)",
                "folds": FOLDS,
                "episode_rule": "1000 episodes: class = random fold class, query = random image of its list, "
                                "supports = random images of the list redrawn while equal to the query"}
