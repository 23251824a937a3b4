"""LVIS-92i one-shot episodes (Matcher; ``shared/specs/benchmarks.md`` §4).

Layout: ``<root>/LVIS/lvis_val.pkl`` (Matcher's file: class id → {relative image path → {"annotations":
[{"segmentation": …}, …]}}) and COCO-2017 images under ``<root>/LVIS/coco/`` (``train2017/`` and ``val2017/``,
the pickle's paths are relative to it). ``lvis_train.pkl`` is not needed for evaluation. Pickles are loaded with
:mod:`vos.datasets.safe_pickle`.

Classes: the pickle's classes with more than ``shot`` images, in the pickle's key order; fold f of 10 takes
positions f, f+10, … (n = count // 10 classes, the remainder dropped). Episodes: 2300 per fold, episode i uses
class i mod n; query = one-element choice of the class's images, each support a choice redrawn while it equals the
query (supports may repeat each other). Masks: union of every instance of the class in the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util

from vos.datasets import safe_pickle
from vos.io.images import read_rgb
from vos.errors import DatasetError
from vos.datasets.episodes import Episode, check_fold_shot, choose_index, episode_rng

FOLDS = 10
EPISODES = 2300


def segmentation_mask(segm: Any, height: int, width: int, source: str = "segmentation") -> np.ndarray:
    """Rasterise one COCO-style segmentation to ``bool H×W`` the pycocotools way.

    ``segm``: polygons (list of flat ``[x0, y0, x1, y1, …]`` lists, merged with ``frPyObjects`` + ``merge``),
    RLE dict (compressed ``counts`` as str/bytes, or uncompressed list counts) or a 2-D array (non-zero = object).
    """
    try:
        if isinstance(segm, list):
            if not segm:
                return np.zeros((height, width), dtype=bool)
            rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in segm], height, width)
            mask = mask_util.decode(mask_util.merge(rles))
        elif isinstance(segm, dict):
            rle = dict(segm)
            if isinstance(rle.get("counts"), list):
                rle = mask_util.frPyObjects(rle, *rle["size"])
            mask = mask_util.decode(rle)
        elif isinstance(segm, np.ndarray) and segm.ndim == 2:
            mask = segm
        else:
            raise DatasetError(f"{source}: unsupported segmentation of type {type(segm).__name__}")
    except DatasetError:
        raise
    except Exception as err:  # pycocotools raises TypeError/ValueError/KeyError on malformed input
        raise DatasetError(f"{source}: cannot rasterise segmentation ({type(err).__name__}: {err})") from err
    mask = np.asarray(mask) != 0
    if mask.shape != (height, width):
        raise DatasetError(f"{source}: segmentation size {mask.shape[1]}×{mask.shape[0]} differs from the image "
                           f"size {width}×{height} (W×H)")
    return mask


def union_mask(segms: Sequence[Any], height: int, width: int, source: str) -> np.ndarray:
    """Union of several segmentations, ``bool H×W``."""
    mask = np.zeros((height, width), dtype=bool)
    for segm in segms:
        mask |= segmentation_mask(segm, height, width, source)
    return mask


@dataclass(frozen=True, eq=False)
class LvisSample:
    """One image of an episode: ``key`` = path relative to ``LVIS/coco``; ``segms`` = the class's instances."""

    key: str
    image: Path
    segms: Tuple[Any, ...]


def fold_classes(candidates: Sequence[Any], fold: int, folds: int) -> List[Any]:
    """Interleaved fold: positions ``fold, fold + folds, …`` of ``candidates``, ``len // folds`` of them."""
    n = len(candidates) // folds
    return [candidates[fold + folds * v] for v in range(n)]


class LVIS92i:
    """One fold of LVIS-92i (2300 episodes)."""

    name = "lvis"
    folds = FOLDS

    def __init__(self, root: Union[str, Path], fold: int, shot: int = 1):
        check_fold_shot("LVIS-92i", fold, FOLDS, shot)
        self.root, self.fold, self.shot = Path(root), fold, shot
        self.base = self.root / "LVIS"
        self.pickle_path = self.base / "lvis_val.pkl"
        self.val = safe_pickle.load(self.pickle_path)
        if not isinstance(self.val, dict):
            raise DatasetError(f"{self.pickle_path}: expected a dict class id → images, "
                               f"got {type(self.val).__name__}")
        candidates = [cid for cid, images in self.val.items() if len(images) > shot]
        self.candidate_count = len(candidates)
        self.class_ids = fold_classes(candidates, fold, FOLDS)
        if not self.class_ids:
            raise DatasetError(f"{self.pickle_path}: only {len(candidates)} classes have more than {shot} images; "
                               f"{FOLDS} folds need at least {FOLDS}")
        self.class_names = [str(cid) for cid in self.class_ids]

    def __len__(self) -> int:
        return EPISODES

    def _sample(self, class_id: Any, rel_path: str) -> LvisSample:
        info = self.val[class_id][rel_path]
        try:
            segms = tuple(a["segmentation"] for a in info["annotations"])
        except (TypeError, KeyError) as err:
            raise DatasetError(f"{self.pickle_path}: class {class_id} image {rel_path}: no "
                               f"annotations/segmentation entry ({err})") from None
        return LvisSample(str(rel_path), self.base / "coco" / str(rel_path), segms)

    def episodes(self, count: Optional[int] = None) -> Iterator[Episode]:
        rng = episode_rng()
        total = EPISODES if count is None else min(count, EPISODES)
        for index in range(total):
            class_index = index % len(self.class_ids)
            class_id = self.class_ids[class_index]
            names = list(self.val[class_id].keys())
            query = names[choose_index(rng, len(names), f"image list of class {class_id}")]
            supports: List[str] = []
            while len(supports) < self.shot:
                candidate = names[choose_index(rng, len(names))]
                if candidate != query:
                    supports.append(candidate)
            yield Episode(index, class_index, self._sample(class_id, query),
                          tuple(self._sample(class_id, s) for s in supports))

    def load(self, sample: LvisSample) -> Tuple[np.ndarray, np.ndarray]:
        """``(uint8 H×W×3 RGB image, bool H×W union of the class's instances)``."""
        if not sample.image.is_file():
            raise DatasetError(f"{sample.image}: LVIS image not found (COCO-2017 train2017/ and val2017/ go under "
                               f"{self.base / 'coco'})")
        image = read_rgb(sample.image)
        return image, union_mask(sample.segms, image.shape[0], image.shape[1], f"{self.pickle_path} [{sample.key}]")

    def protocol(self) -> dict:
        """Fold-independent dataset settings recorded in every result file."""
        return {"dataset": "LVIS-92i", "annotations": str(self.pickle_path), "shot": self.shot,
                "candidate_classes": self.candidate_count, "folds": FOLDS,
                "episode_rule": "episode i uses fold class i mod n (pickle key order, interleaved folds); query = "
                                "choice of the class's images; supports = choices redrawn while equal to the query; "
                                "mask = union of all instances of the class"}
