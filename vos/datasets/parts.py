"""One-shot part segmentation episodes (Matcher; ``shared/specs/benchmarks.md`` §5): PASCAL-Part and PACO-Part.

PASCAL-Part layout (``<root>/Pascal-Part/VOCdevkit/VOC2010/``): ``JPEGImages/<id>.jpg``,
``all_obj_part_to_image.json`` (super-category → "object" → object → "part" → PART → {"train": [ids],
"val": [ids]}) and ``Annotations_Part_json_merged_part_classes/<id>.json`` ("object": [{"name", "bndbox": {xmin,
ymin, xmax, ymax}, "parts": [{"name", "mask": [RLE with ASCII counts, …]}]}]).

PACO-Part layout (``<root>/PACO-Part/``): ``coco/<train2017|val2017>/<file>.jpg`` and Matcher's
``paco/paco_part_{train,val}.pkl`` ({"cid2img": {class: [{image id: path}]}, "img2anno": {image id: [{"category_id",
"obj_ann_id", "obj_bbox" [x, y, w, h], "segmentation"}]}}), loaded with :mod:`vos.datasets.safe_pickle`.

Both crop query and supports to the chosen object instance's box before resizing (``box_crop``, on by default:
it defines the benchmark). Every random draw is a one-element choice from the private legacy RNG.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from vos.datasets import safe_pickle
from vos.datasets.lvis import fold_classes, segmentation_mask
from vos.io.images import read_rgb
from vos.errors import DatasetError
from vos.datasets.episodes import Episode, check_fold_shot, choose_index, episode_rng

PASCAL_FOLDS = ("animals", "indoor", "person", "vehicles")
PASCAL_MAX_EPISODES = 2500
PASCAL_EXCLUDED = ("aeroplane+TAIL",)
PACO_FOLDS = 4
PACO_TRAIN_CLASSES = 448
PACO_EPISODES = 2500


@dataclass(frozen=True, eq=False)
class PartSample:
    """One image of an episode: the chosen instance's part segmentations and crop box.

    ``box`` = ``(row0, row1, col0, col1)``, a 0-based end-exclusive slice of the original image.
    ``key`` names the image and instance (written to results).
    """

    key: str
    image: Path
    segms: Tuple[Any, ...]
    box: Tuple[int, int, int, int]


def crop(array: np.ndarray, box: Tuple[int, int, int, int]) -> np.ndarray:
    """``array[row0:row1, col0:col1]`` (numpy slicing semantics, as the reference does)."""
    r0, r1, c0, c1 = box
    return array[r0:r1, c0:c1]


def _load_sample(sample: PartSample, box_crop: bool, source: str) -> Tuple[np.ndarray, np.ndarray]:
    if not sample.image.is_file():
        raise DatasetError(f"{sample.image}: image not found")
    image = read_rgb(sample.image)
    mask = np.zeros(image.shape[:2], dtype=bool)
    for segm in sample.segms:
        mask |= segmentation_mask(segm, image.shape[0], image.shape[1], f"{source} [{sample.key}]")
    if box_crop:
        image, mask = crop(image, sample.box), crop(mask, sample.box)
        if image.size == 0:
            raise DatasetError(f"{source} [{sample.key}]: empty instance box {sample.box} (row0, row1, col0, col1)")
    return image, mask


class PascalPart:
    """One fold (super-category) of PASCAL-Part: min(2500, Σ val list lengths) episodes."""

    name = "pascal_part"
    folds = len(PASCAL_FOLDS)

    def __init__(self, root: Union[str, Path], fold: int, shot: int = 1, box_crop: bool = True):
        check_fold_shot(f"PASCAL-Part ({', '.join(PASCAL_FOLDS)})", fold, len(PASCAL_FOLDS), shot)
        self.root, self.fold, self.shot, self.box_crop = Path(root), fold, shot, box_crop
        self.base = self.root / "Pascal-Part" / "VOCdevkit" / "VOC2010"
        self.index_path = self.base / "all_obj_part_to_image.json"
        self.anno_dir = self.base / "Annotations_Part_json_merged_part_classes"
        self.category = PASCAL_FOLDS[fold]
        index = _read_json(self.index_path)
        try:
            objects = index[self.category]["object"]
            self.parts = {obj: {part: {"train": list(lists["train"]), "val": list(lists["val"])}
                                for part, lists in objects[obj]["part"].items()} for obj in objects}
        except (KeyError, TypeError, AttributeError) as err:
            raise DatasetError(f"{self.index_path}: no {self.category!r} → object → part → train/val lists "
                               f"({type(err).__name__}: {err})") from None
        self.classes: List[Tuple[str, str]] = [
            (obj, part) for obj, parts in self.parts.items() for part, lists in parts.items()
            if lists["train"] and lists["val"] and f"{obj}+{part}" not in PASCAL_EXCLUDED]
        if not self.classes:
            raise DatasetError(f"{self.index_path}: no part class of {self.category!r} has train and val images")
        self.class_names = [f"{obj}+{part}" for obj, part in self.classes]
        # Episode count: every val list of the super-category, duplicates included (classes filtered out too).
        self.val_images = sum(len(lists["val"]) for parts in self.parts.values() for lists in parts.values())
        self._annotation = lru_cache(maxsize=4096)(self._read_annotation)

    def __len__(self) -> int:
        return min(PASCAL_MAX_EPISODES, self.val_images)

    def _read_annotation(self, image_id: str) -> List[dict]:
        path = self.anno_dir / f"{image_id}.json"
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("object"), list):
            raise DatasetError(f"{path}: expected {{'object': [...]}}")
        return data["object"]

    def _instances(self, image_id: str, obj: str) -> List[dict]:
        instances = [o for o in self._annotation(image_id) if o.get("name") == obj]
        if not instances:
            raise DatasetError(f"{self.anno_dir / (str(image_id) + '.json')}: listed for {obj!r} in "
                               f"{self.index_path.name} but has no {obj!r} object")
        return instances

    def _draw(self, rng: np.random.RandomState, image_id: str, obj: str, part: str) -> Optional[PartSample]:
        """Draw an instance of ``obj`` in the image; None if it lacks ``part`` (the caller redraws the image)."""
        instances = self._instances(image_id, obj)
        k = choose_index(rng, len(instances))
        inst = instances[k]
        parts = [p for p in inst.get("parts", []) if p.get("name") == part]
        if not parts:
            return None
        segms = [m for p in parts for m in p.get("mask", [])]
        return PartSample(f"{image_id}#{k}", self.base / "JPEGImages" / f"{image_id}.jpg",
                          tuple(segms), _voc_box(inst, self.anno_dir / f"{image_id}.json"))

    def _has_part(self, image_id: str, obj: str, part: str) -> bool:
        return any(p.get("name") == part for o in self._instances(image_id, obj) for p in o.get("parts", []))

    def _check_drawable(self, ids: Sequence[str], excluded: Sequence[str], obj: str, part: str, what: str) -> None:
        """Refuse an endless redraw loop: some candidate image must have an instance carrying the part."""
        if not any(i not in excluded and self._has_part(i, obj, part) for i in dict.fromkeys(ids)):
            raise DatasetError(f"{self.index_path}: no {what} image for {obj}+{part} (val list {list(ids)[:5]}…): "
                               f"no other image has an {obj!r} instance with part {part!r}")

    def episodes(self, count: Optional[int] = None) -> Iterator[Episode]:
        rng = episode_rng()
        total = len(self) if count is None else min(count, len(self))
        for index in range(total):
            class_index = index % len(self.classes)
            obj, part = self.classes[class_index]
            ids = self.parts[obj][part]["val"]
            self._check_drawable(ids, (), obj, part, "query")
            while True:
                query_id = ids[choose_index(rng, len(ids))]
                query = self._draw(rng, query_id, obj, part)
                if query is not None:
                    break
            supports: List[PartSample] = []
            support_ids: List[str] = []
            while len(supports) < self.shot:
                self._check_drawable(ids, [query_id, *support_ids], obj, part, "support")
                while True:
                    candidate = ids[choose_index(rng, len(ids))]
                    if candidate == query_id or candidate in support_ids:
                        continue
                    sample = self._draw(rng, candidate, obj, part)
                    if sample is not None:
                        break
                supports.append(sample)
                support_ids.append(candidate)
            yield Episode(index, class_index, query, tuple(supports))

    def load(self, sample: PartSample) -> Tuple[np.ndarray, np.ndarray]:
        """``(uint8 H×W×3, bool H×W)``: union of the instance's part masks, cropped to its box if ``box_crop``."""
        return _load_sample(sample, self.box_crop, str(self.anno_dir))

    def protocol(self) -> dict:
        """Fold-independent dataset settings recorded in every result file."""
        return {"dataset": "PASCAL-Part", "index": str(self.index_path), "shot": self.shot, "box_crop": self.box_crop,
                "folds": "4 super-categories: " + ", ".join(PASCAL_FOLDS),
                "episode_rule": "min(2500, total val list length) episodes cycling through the part classes; "
                                "query/support = random val image, random instance of the object, redrawn if the "
                                "instance lacks the part; supports distinct and different from the query"}


def _voc_box(instance: dict, source: Path) -> Tuple[int, int, int, int]:
    try:
        box = instance["bndbox"]
        xmin, ymin, xmax, ymax = (int(float(box[k])) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(f"{source}: object without a valid bndbox xmin/ymin/xmax/ymax ({err})") from None
    return ymin, ymax, xmin, xmax


def _read_json(path: Path) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found") from None
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read JSON ({err})") from err


class PacoPart:
    """One fold of PACO-Part (2500 episodes)."""

    name = "paco_part"
    folds = PACO_FOLDS

    def __init__(self, root: Union[str, Path], fold: int, shot: int = 1, box_crop: bool = True):
        check_fold_shot("PACO-Part", fold, PACO_FOLDS, shot)
        self.root, self.fold, self.shot, self.box_crop = Path(root), fold, shot, box_crop
        self.base = self.root / "PACO-Part"
        self.train_path = self.base / "paco" / "paco_part_train.pkl"
        self.val_path = self.base / "paco" / "paco_part_val.pkl"
        train, val = safe_pickle.load(self.train_path), safe_pickle.load(self.val_path)
        try:
            train_ids = list(train["cid2img"].keys())
            self.cid2img = {cid: _dedupe(images, self.val_path) for cid, images in val["cid2img"].items()}
            self.img2anno: Dict[Any, List[dict]] = val["img2anno"]
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            raise DatasetError(f"{self.val_path}: expected 'cid2img' and 'img2anno' dicts "
                               f"({type(err).__name__}: {err})") from None
        if len(train_ids) != PACO_TRAIN_CLASSES:
            raise DatasetError(f"{self.train_path}: {len(train_ids)} part classes, PACO-Part has {PACO_TRAIN_CLASSES}")
        testable = {cid for cid, images in self.cid2img.items() if len(images) > shot}
        self.class_ids = [cid for cid in fold_classes(train_ids, fold, PACO_FOLDS) if cid in testable]
        if not self.class_ids:
            raise DatasetError(f"{self.val_path}: no class of fold {fold} has more than {shot} val images")
        self.class_names = [str(cid) for cid in self.class_ids]

    def __len__(self) -> int:
        return PACO_EPISODES

    def _draw(self, rng: np.random.RandomState, class_id: Any, entry: Tuple[Any, str]) -> PartSample:
        image_id, rel = entry
        instances: Dict[Any, dict] = {}
        for anno in self.img2anno.get(image_id, []):
            if anno.get("category_id") == class_id:
                inst = instances.setdefault(anno.get("obj_ann_id"), {"box": anno.get("obj_bbox"), "segms": []})
                inst["segms"].append(anno.get("segmentation"))
        if not instances:
            raise DatasetError(f"{self.val_path}: image {image_id} is listed for class {class_id} but has no "
                               f"annotation of it")
        keys = list(instances)
        obj = keys[choose_index(rng, len(keys))]
        return PartSample(f"{rel}#{obj}", self.base / "coco" / rel, tuple(instances[obj]["segms"]),
                          _xywh_box(instances[obj]["box"], self.val_path))

    def episodes(self, count: Optional[int] = None) -> Iterator[Episode]:
        rng = episode_rng()
        total = PACO_EPISODES if count is None else min(count, PACO_EPISODES)
        for index in range(total):
            class_index = choose_index(rng, len(self.class_ids))
            class_id = self.class_ids[class_index]
            images = self.cid2img[class_id]
            query_entry = images[choose_index(rng, len(images))]
            query = self._draw(rng, class_id, query_entry)
            supports: List[PartSample] = []
            while len(supports) < self.shot:
                entry = images[choose_index(rng, len(images))]
                if entry[1] != query_entry[1]:
                    supports.append(self._draw(rng, class_id, entry))
            yield Episode(index, class_index, query, tuple(supports))

    def load(self, sample: PartSample) -> Tuple[np.ndarray, np.ndarray]:
        """``(uint8 H×W×3, bool H×W)``: union of the instance's part segments, cropped to its box if ``box_crop``."""
        return _load_sample(sample, self.box_crop, str(self.val_path))

    def protocol(self) -> dict:
        """Fold-independent dataset settings recorded in every result file."""
        return {"dataset": "PACO-Part", "annotations": str(self.val_path), "shot": self.shot,
                "box_crop": self.box_crop, "folds": PACO_FOLDS,
                "episode_rule": "2500 episodes: class = random fold class, query = random val image (image lists "
                                "de-duplicated by id), random instance carrying the part; supports = other images, "
                                "each with its own random instance"}


def _dedupe(images: Sequence[dict], source: Path) -> List[Tuple[Any, str]]:
    """``[(image id, "<split>/<file>")]``: first occurrence of each id, path cut to its last two components."""
    seen, out = set(), []
    for item in images:
        if not isinstance(item, dict) or not item:
            raise DatasetError(f"{source}: cid2img entry {item!r} is not a {{image id: path}} dict")
        image_id, path = next(iter(item.items()))
        if image_id not in seen:
            seen.add(image_id)
            out.append((image_id, "/".join(str(path).split("/")[-2:])))
    return out


def _xywh_box(box: Any, source: Path) -> Tuple[int, int, int, int]:
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{source}: object box {box!r} is not [x, y, w, h] ({err})") from None
    return int(y), int(y + h), int(x), int(x + w)
