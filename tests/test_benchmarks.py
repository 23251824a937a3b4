"""Image benchmarks: metrics, loaders in every official layout, episode generation, pickle safety, CLI end to end.

Small datasets are built in ``tmp_path`` from the real frames and masks in ``tests/data/benchmarks`` (DAVIS,
see its README). Episode checks compare with the spec's listed FSS-1000 episodes and with straight transcriptions
of the protocols that draw from NumPy's *global* legacy generator, as HSNet and Matcher do.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vos.datasets import safe_pickle
from vos.datasets.coco20i import COCO20i, fold_class_ids
from vos.datasets.fss import FSS1000, fss_episodes, read_split
from vos.datasets.lvis import LVIS92i, segmentation_mask
from vos.datasets.parts import PacoPart, PascalPart
from vos.datasets.perseg import load_perseg, luminance_foreground, read_binary_mask
from vos.errors import DatasetError, EvaluationError, OutputError, UnsafePickleError
from vos.datasets.episodes import choose_index, episode_rng, nearest_indices, resize_mask_nearest
from vos.eval.episodic import PooledMeter, episode_counts, fold_mean
from vos.eval.iou import PooledIoU, boundary_band, boundary_counts, boundary_distance, boundary_iou, mask_counts
from vos.eval.report import markdown_table
from vos.runs import RunFolder

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "benchmarks"
TINY = ["--model", "tiny", "--checkpoint", str(REPO / "tests/data/persam_ref/weights/tiny_sam_public.pt"),
        "--encoder", "stock", "--device", "cpu", "--no-progress"]
FRAMES = ["blackswan_00000", "blackswan_00010", "blackswan_00020", "blackswan_00030",
          "car-shadow_00000", "car-shadow_00010", "car-shadow_00020"]


def frame(i: int):
    """``(uint8 90×160×3 RGB, bool 90×160)`` of test frame ``i`` (cycled)."""
    name = FRAMES[i % len(FRAMES)]
    return (np.asarray(Image.open(DATA / f"{name}.jpg").convert("RGB")),
            np.asarray(Image.open(DATA / f"{name}.png").convert("L")) > 0)


def square(top, left, size, shape=(100, 100)):
    m = np.zeros(shape, bool)
    m[top:top + size, left:left + size] = True
    return m


# --------------------------------------------------------------------------------------------------- metrics


def test_boundary_iou_spec_worked_example():
    gt = square(20, 20, 60)
    pred = square(25, 20, 60)
    assert mask_counts(gt, pred) == (3300, 3900, 3600)
    assert boundary_distance(100, 100, 0.02) == 3
    assert boundary_counts(gt, pred, 0.02) == (330, 1038)
    assert boundary_iou(gt, pred, 0.02) == pytest.approx(330 / 1038)
    assert round(boundary_iou(gt, pred, 0.02), 6) == 0.317919
    assert boundary_distance(100, 100, 0.01) == 1
    assert boundary_counts(gt, pred, 0.01) == (110, 362)
    assert round(boundary_iou(gt, pred, 0.01), 6) == 0.303867
    assert boundary_band(np.ones((100, 100), bool), 3).sum() == 1164


@pytest.mark.parametrize("hw,d2,d1", [((480, 854), 20, 10), ((518, 518), 15, 7), ((224, 224), 6, 3),
                                      ((1024, 1024), 29, 14)])
def test_boundary_distance_table(hw, d2, d1):
    assert boundary_distance(*hw, 0.02) == d2
    assert boundary_distance(*hw, 0.01) == d1


def test_boundary_distance_rounds_half_to_even_and_at_least_one():
    # ratio · diagonal = 2.5 exactly for a 3×4 image (diagonal 5) at ratio 0.5: Python round → 2
    assert boundary_distance(3, 4, 0.5) == 2
    assert boundary_distance(3, 4, 0.7) == 4          # 3.5 → 4 (even)
    assert boundary_distance(10, 10, 0.001) == 1      # 0.014 → 0 → at least 1


def test_boundary_band_edges_and_thin_objects():
    full = np.ones((5, 5), bool)
    band = boundary_band(full, 1)
    assert band.sum() == 16 and not band[1:4, 1:4].any()        # the image edge counts as non-mask
    line = np.zeros((20, 20), bool)
    line[5:8, 2:18] = True                                      # 3 px thick < 2d: all band
    assert (boundary_band(line, 2) == line).all()
    assert boundary_iou(line, line, 0.1) == 1.0


def test_boundary_iou_empty_conventions_and_pooling():
    empty = np.zeros((50, 50), bool)
    obj = square(10, 10, 20, (50, 50))
    assert boundary_iou(empty, empty) == 1.0
    assert boundary_iou(empty, obj) == 0.0 and boundary_iou(obj, empty) == 0.0
    meter = PooledIoU(0.02)
    meter.add("a", empty, empty)          # adds 0 to pooled sums
    meter.add("a", obj, obj)
    s = meter.objects["a"]
    assert s.empty_band_images == 1
    assert s.biou("object") == 1.0 and s.biou("image") == 1.0
    meter.add("a", obj, empty)
    band = boundary_band(obj, 1).sum()    # 50×50: d = round(0.02·70.7) = 1
    assert boundary_distance(50, 50, 0.02) == 1
    assert s.boundary_intersection == band and s.boundary_union == 2 * band
    assert s.biou("object") == pytest.approx(0.5)
    assert s.biou("image") == pytest.approx(2 / 3)
    assert meter.summary("object")["empty_band_images"] == 2


def test_perseg_iou_is_pooled_per_object_not_per_image():
    gt1, pred1 = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    gt1.flat[:90] = True
    pred1.flat[:100] = True                # I = 90, U = 100
    gt2, pred2 = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    gt2.flat[0] = True
    pred2.flat[:10] = True                 # I = 1, U = 10
    meter = PooledIoU()
    meter.add("obj", gt1, pred1)
    meter.add("obj", gt2, pred2)
    assert meter.objects["obj"].iou == pytest.approx(91 / 110)
    assert round(meter.objects["obj"].iou, 3) == 0.827         # per-image mean would be 0.50
    meter.add("other", gt1, np.zeros((10, 10), bool))
    summary = meter.summary()
    assert summary["mIoU"] == pytest.approx(100 * (91 / 110 + 0) / 2)
    assert summary["mAcc"] == pytest.approx(100 * (1.0 + 0.0) / 2)
    assert summary["objects"] == 2 and summary["images"] == 3
    with pytest.raises(EvaluationError):
        meter.add("obj", gt1, np.zeros((5, 5), bool))


def test_biou_object_vs_image_aggregation():
    gt, shifted = square(20, 20, 60), square(25, 20, 60)
    meter = PooledIoU(0.02)
    meter.add("o", gt, shifted)            # 330 / 1038
    meter.add("o", gt, gt)                 # band of a 60×60 square at d = 3: 60² − 54² = 684
    assert boundary_band(gt, 3).sum() == 684
    assert meter.summary("object")["bIoU"] == pytest.approx(100 * (330 + 684) / (1038 + 684))
    assert meter.summary("image")["bIoU"] == pytest.approx(100 * (330 / 1038 + 1) / 2)


def test_luminance_rule_on_rgb_palette_and_alpha_pngs(tmp_path):
    colors = np.array([[[0, 0, 0], [128, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 0, 4], [0, 0, 5],
                        [255, 255, 255]]], np.uint8)
    expected = np.array([[False, True, False, True, True, False, True, True]])
    # round(0.299·2) = 1, round(0.587) = 1, round(0.456) = 0, round(0.57) = 1, round(0.299) = 0
    assert (luminance_foreground(colors) == expected).all()
    Image.fromarray(colors).save(tmp_path / "rgb.png")
    Image.fromarray(colors).convert("P", palette=Image.ADAPTIVE, colors=8).save(tmp_path / "pal.png")
    rgba = np.concatenate([colors, np.zeros((1, 8, 1), np.uint8)], axis=2)     # fully transparent: alpha dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    for name in ("rgb.png", "rgba.png"):
        assert (read_binary_mask(tmp_path / name) == expected).all()
    pal = Image.open(tmp_path / "pal.png")
    assert pal.mode == "P"
    assert (read_binary_mask(tmp_path / "pal.png") == luminance_foreground(np.asarray(pal.convert("RGB")))).all()


def test_episode_counts_and_pooled_meter_by_hand():
    gt = np.array([[1, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[1, 0, 1], [0, 0, 0]], bool)
    inter, union = episode_counts(gt, pred)
    assert inter == [3, 1] and union == [5, 3]      # bg: both 0 at 3 px, either 0 at 5 px; fg: 1 and 3
    meter = PooledMeter(3)
    meter.add(0, [3, 1], [5, 3])
    meter.add(0, [4, 2], [6, 2])
    meter.add(1, [0, 0], [6, 6])
    # class 2 never seen: scores 0 and stays in the mean
    iou = meter.class_iou()
    assert iou[1].tolist() == pytest.approx([3 / 5, 0.0, 0.0])
    assert meter.miou() == pytest.approx(100 * (3 / 5) / 3)
    assert meter.miou(seen_only=True) == pytest.approx(100 * (3 / 5) / 2)
    assert meter.fb_iou() == pytest.approx(100 * (7 / 17 + 3 / 11) / 2)
    # never the mean of per-episode IoU: (1/3 + 2/2 + 0) / ... would differ
    assert meter.miou() != pytest.approx(100 * ((1 / 3 + 1) / 2) / 3)
    assert fold_mean([50.0, 30.0, 10.0, 10.0]) == 25.0


def test_legacy_nearest_resize_matches_pytorch():
    for n in (21, 64, 90, 160, 224, 333, 480, 640):
        for out in (518, 400, 37):
            x = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1)
            ref = F.interpolate(x, size=(out, 1), mode="nearest").view(-1).long().numpy()
            assert (nearest_indices(n, out) == ref).all(), (n, out)
    # the spec's exact formula agrees at FSS-1000's native 224 → 518 ...
    assert (nearest_indices(224, 518) == np.arange(518) * 224 // 518).all()
    # ... but not everywhere: 21 → 518 differs (PyTorch computes in float32)
    assert (nearest_indices(21, 518) != np.arange(518) * 21 // 518).sum() == 4
    mask = frame(0)[1]
    ref = F.interpolate(torch.from_numpy(mask).float()[None, None], size=(518, 518), mode="nearest")[0, 0] > 0
    assert (resize_mask_nearest(mask, (518, 518)) == ref.numpy()).all()


def test_choose_index_consumes_the_stream_like_a_one_element_choice():
    rng = episode_rng()
    np.random.seed(0)
    seq = ["a", "b", "c", "d", "e", "f", "g"]
    for n in (10, 7, 3, 1, 12, 7):
        assert choose_index(rng, n) == np.random.choice(list(range(n)), 1, replace=False)[0]
    assert seq[choose_index(rng, 7)] == np.random.choice(seq, 1, replace=False)[0]
    # an integer draw consumes the stream differently: after one draw of each kind the streams differ
    a, b = episode_rng(), episode_rng()
    choose_index(a, 10)
    b.randint(10)
    assert a.random_sample() != b.random_sample()
    with pytest.raises(DatasetError):
        choose_index(rng, 0)


def test_markdown_table_and_run_settings_guard(tmp_path):
    assert markdown_table(["a", "b"], [(1, 0.123456), ("x|y", True)]) == \
        "| a | b |\n|---|---|\n| 1 | 0.12 |\n| x\\|y | True |"
    for _ in range(2):            # a new folder, then the same settings again: accepted
        folder = RunFolder(tmp_path / "run", "perseg", "continue")
        folder.plan({"method": "persam", "model": "vit_h"})
        folder.start({"method": "persam", "model": "vit_h"})
    assert folder.resuming
    with pytest.raises(OutputError, match='holds another run \\(method: "persam" → "persam_f"\\)'):
        RunFolder(tmp_path / "run", "perseg", "continue").plan({"method": "persam_f", "model": "vit_h"})


# ------------------------------------------------------------------------------------------------ safe pickle


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_safe_pickle_accepts_plain_data_and_numpy_arrays(protocol):
    value = {1: {"train2017/a.jpg": {"annotations": [{"segmentation": [[1.0, 2, 3, 4, 5, 6]]},
                                                     {"segmentation": {"size": [4, 5], "counts": "abc"}},
                                                     {"segmentation": np.eye(3, dtype=np.uint8)}]}},
             "t": (None, True, False, b"bytes", -7, 2.5, np.int64(5), np.float32(0.5)),
             "f": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    loaded = safe_pickle.loads(pickle.dumps(value, protocol=protocol), "test")
    seg = loaded[1]["train2017/a.jpg"]["annotations"]
    assert seg[0]["segmentation"] == [[1.0, 2, 3, 4, 5, 6]] and seg[1]["segmentation"]["counts"] == "abc"
    assert seg[2]["segmentation"].dtype == np.uint8 and (seg[2]["segmentation"] == np.eye(3)).all()
    assert loaded["t"][:6] == (None, True, False, b"bytes", -7, 2.5)
    assert type(loaded["t"][6]) is np.int64 and loaded["t"][6] == 5
    assert (loaded["f"] == value["f"]).all()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_safe_pickle_refuses_code_execution(tmp_path, protocol):
    marker = tmp_path / "pwned"
    data = pickle.dumps({"x": [1, _Exploit(marker)]}, protocol=protocol)
    with pytest.raises(UnsafePickleError, match="system"):
        safe_pickle.loads(data, "evil.pkl")
    assert not marker.exists()
    # a pickle that would build an arbitrary class instance
    with pytest.raises(UnsafePickleError):
        safe_pickle.loads(pickle.dumps(OutputError("x"), protocol=protocol), "obj.pkl")


def test_safe_pickle_refuses_sets_object_arrays_and_numpy_when_disabled():
    for bad in ({1, 2}, np.array([1, "a"], dtype=object)):
        with pytest.raises(UnsafePickleError):
            safe_pickle.loads(pickle.dumps(bad, protocol=4), "bad.pkl")
    with pytest.raises(UnsafePickleError, match="opcode"):
        safe_pickle.loads(pickle.dumps(np.eye(2), protocol=4), "n.pkl", allow_numpy=False)
    with pytest.raises(DatasetError, match="not a valid pickle|cannot unpickle"):
        safe_pickle.loads(pickle.dumps([1, 2, 3])[:-3], "truncated.pkl")


def test_lvis_loader_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "LVIS").mkdir()
    (tmp_path / "LVIS" / "lvis_val.pkl").write_bytes(pickle.dumps({1: _Exploit(marker)}))
    with pytest.raises(DatasetError, match=r"lvis_val\.pkl.*refusing"):
        LVIS92i(tmp_path, 0)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ PerSeg


def build_perseg(root: Path, objects=None):
    """PerSeg tree: object → frame indices (first = 00). RGB (128, 0, 0) annotations, one object as palette PNGs."""
    objects = objects or {"blackswan": [0, 1, 2, 3], "car_shadow": [4, 5, 6]}
    for k, (name, frames) in enumerate(objects.items()):
        for i, f in enumerate(frames):
            image, mask = frame(f)
            (root / "Images" / name).mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "Images" / name / f"{i:02d}.jpg", quality=95)
            ann = np.zeros((*mask.shape, 3), np.uint8)
            ann[mask] = (128, 0, 0)
            img = Image.fromarray(ann)
            if k == 1:
                img = img.convert("P", palette=Image.ADAPTIVE, colors=2)
            img.save(root / "Annotations" / name / f"{i:02d}.png")
    (root / "Images" / ".DS_Store").write_bytes(b"\0")
    (root / "Images" / "blackswan" / ".DS_Store").write_bytes(b"\0")
    (root / "Images" / "__MACOSX").mkdir()
    return objects


def test_perseg_loader_reads_names_from_disk_and_skips_hidden(tmp_path):
    build_perseg(tmp_path)
    with pytest.warns(UserWarning, match="2 objects.*40"):
        objects = load_perseg(tmp_path)
    assert [o.name for o in objects] == ["blackswan", "car_shadow"]
    assert objects[0].stems == ["00", "01", "02", "03"] and objects[1].stems == ["00", "01", "02"]
    assert objects[1].annotations["02"].name == "02.png"
    assert (read_binary_mask(objects[1].annotations["01"]) == frame(5)[1]).all()    # palette PNG expanded


def test_perseg_loader_errors_name_the_missing_file(tmp_path):
    build_perseg(tmp_path)
    (tmp_path / "Annotations" / "car_shadow" / "01.png").unlink()
    with pytest.raises(DatasetError, match=r"car_shadow/01\.png: annotation of image 01\.jpg not found"):
        load_perseg(tmp_path)
    with pytest.raises(DatasetError, match=r"nowhere/Images: PerSeg folder not found"):
        load_perseg(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ FSS-1000


def build_fss(root: Path, classes, layout="matcher", split=True):
    """FSS-1000 tree: 10 images of 64×64 per class, split file with CRLF line ends in file order ``classes``."""
    base = root / "FSS-1000" / ("data" if layout == "matcher" else "")
    for c, name in enumerate(classes):
        (base / name).mkdir(parents=True, exist_ok=True)
        for k in range(1, 11):
            image, mask = frame(c + k)
            Image.fromarray(image[13:77, 48:112]).save(base / name / f"{k}.jpg", quality=95)
            Image.fromarray((mask[13:77, 48:112] * 255).astype(np.uint8)).save(base / name / f"{k}.png")
    if split:
        path = root / "FSS-1000" / "splits" / "test.txt" if layout == "matcher" else root / "splits/fss/test.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(("\r\n".join(classes) + "\r\n").encode())
    return base


def test_fss_first_episodes_match_the_spec(tmp_path):
    # accordion's first episode follows the ten of abe's_flyingfish: a tree whose first two classes (code point
    # order) are these reproduces the first eleven episodes of the real 240-class split.
    build_fss(tmp_path, ["accordion", "abe's_flyingfish", "zucchini"])
    with pytest.warns(UserWarning, match="3 classes"):
        ds = FSS1000(tmp_path)
    assert ds.class_names == ["abe's_flyingfish", "accordion", "zucchini"]
    assert len(ds) == 30
    eps = list(ds.episodes(11))
    assert [e.query.key for e in eps[:10]] == [f"abe's_flyingfish/{q}" for q in
                                               ["1", "10", "2", "3", "4", "5", "6", "7", "8", "9"]]
    assert [e.supports[0].key.split("/")[1] for e in eps[:10]] == ["3", "4", "3", "7", "6", "2", "4", "1", "2", "10"]
    assert (eps[10].query.key, eps[10].supports[0].key) == ("accordion/1", "accordion/5")
    assert [e.class_index for e in eps] == [0] * 10 + [1]


def test_fss_2400th_episode_depends_only_on_rng_and_order():
    # 240 classes of 10 images: the last episode pairs wooden_spoon query 9 with support 5 (spec check).
    order = ["1", "10"] + [str(i) for i in range(2, 10)]
    classes = [(f"class{i:03d}", order) for i in range(239)] + [("wooden_spoon", order)]
    episodes = list(fss_episodes(classes))
    assert len(episodes) == 2400
    assert episodes[-1] == (239, "9", ["5"])
    assert episodes[0] == (0, "1", ["3"]) and episodes[10] == (1, "1", ["5"])
    # 5-shot: five draws, only the query excluded, duplicates allowed
    five = list(fss_episodes(classes[:3], shot=5))
    assert all(len(s) == 5 and q not in s for _, q, s in five)
    assert any(len(set(s)) < 5 for _, _, s in five)


def test_fss_layouts_split_file_and_masks(tmp_path):
    build_fss(tmp_path / "hsnet", ["b_class", "abe's_flyingfish"], layout="hsnet")
    build_fss(tmp_path / "matcher", ["b_class", "abe's_flyingfish"], layout="matcher")
    with pytest.warns(UserWarning):
        hs, mt = FSS1000(tmp_path / "hsnet"), FSS1000(tmp_path / "matcher")
    assert hs.class_root == tmp_path / "hsnet" / "FSS-1000"
    assert mt.class_root == tmp_path / "matcher" / "FSS-1000" / "data"
    assert hs.class_names == mt.class_names == ["abe's_flyingfish", "b_class"]      # no "\r" left
    assert [e.supports[0].key for e in hs.episodes(5)] == [e.supports[0].key for e in mt.episodes(5)]
    image, mask = mt.load(next(mt.episodes(1)).query)
    assert image.shape == (64, 64, 3) and mask.dtype == bool
    expected = np.asarray(Image.open(mt.class_root / "abe's_flyingfish" / "1.png").convert("L")) >= 128
    assert (mask == expected).all() and mask.any()
    assert read_split(tmp_path / "matcher" / "FSS-1000" / "splits" / "test.txt") == ["b_class", "abe's_flyingfish"]


def test_fss_errors_name_the_missing_file_or_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"FSS-1000: FSS-1000 folder not found"):
        FSS1000(tmp_path)
    build_fss(tmp_path, ["a_class"], split=False)
    with pytest.raises(DatasetError, match=r"splits/test\.txt.*--split-file"):
        FSS1000(tmp_path)
    split = tmp_path / "my_split.txt"
    split.write_text("a_class\nmissing_class\n")
    with pytest.warns(UserWarning, match="2 classes"), \
            pytest.raises(DatasetError, match=r"data/missing_class: FSS-1000 class folder not found"):
        FSS1000(tmp_path, split_file=split)


# ------------------------------------------------------------------------------------------------ LVIS-92i


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def build_lvis(root: Path):
    """21 classes in a deliberately unsorted key order; class 1005 has a single image (not a 1-shot candidate)."""
    base = root / "LVIS"
    paths = []
    for i in range(7):
        rel = f"{'train2017' if i % 2 else 'val2017'}/{i:012d}.jpg"
        (base / "coco" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame(i)[0]).save(base / "coco" / rel)
        paths.append(rel)
    val = {}
    for c in range(21):
        cid = 1000 + (c * 13) % 21
        count = 1 if cid == 1005 else 2 + c % 3
        entries = {}
        for j in range(count):
            i = (c + 2 * j) % 7
            mask = frame(i)[1]
            entries[paths[i]] = {"annotations": [{"segmentation": _rle(mask)},
                                                 {"segmentation": [[2, 2, 12, 2, 12, 8, 2, 8]]},
                                                 {"segmentation": np.eye(90, 160, dtype=np.uint8)}]}
        val[cid] = entries
    (base / "lvis_val.pkl").write_bytes(pickle.dumps(val, protocol=4))
    return val


def lvis_reference_episodes(val, fold, shot, count):
    """Matcher's rule with the global legacy generator: (class id, query, supports)."""
    candidates = [c for c in val if len(val[c]) > shot]
    n = len(candidates) // 10
    classes = [candidates[fold + 10 * v] for v in range(n)]
    np.random.seed(0)
    out = []
    for idx in range(count):
        cid = classes[idx % n]
        names = list(val[cid].keys())
        query = np.random.choice(names, 1, replace=False)[0]
        supports = []
        while len(supports) < shot:
            s = np.random.choice(names, 1, replace=False)[0]
            if s != query:
                supports.append(s)
        out.append((cid, query, supports))
    return classes, out


def test_lvis_folds_episodes_and_union_masks(tmp_path):
    val = build_lvis(tmp_path)
    ds = LVIS92i(tmp_path, fold=3, shot=1)
    keys = list(val)
    candidates = [c for c in keys if c != 1005]
    assert ds.candidate_count == 20 and ds.class_ids == [candidates[3], candidates[13]]
    assert len(ds) == 2300
    classes, ref = lvis_reference_episodes(val, 3, 1, 30)
    eps = list(ds.episodes(30))
    assert [(ds.class_ids[e.class_index], e.query.key, [s.key for s in e.supports]) for e in eps] == ref
    assert [e.class_index for e in eps[:4]] == [0, 1, 0, 1]
    # 2-shot: a different candidate set (classes with more than 2 images), supports exclude only the query
    ds2 = LVIS92i(tmp_path, fold=0, shot=2)
    classes2, ref2 = lvis_reference_episodes(val, 0, 2, 12)
    assert ds2.class_ids == classes2 and ds2.candidate_count == sum(len(v) > 2 for v in val.values())
    assert [(e.query.key, [s.key for s in e.supports]) for e in ds2.episodes(12)] == [(q, s) for _, q, s in ref2]
    # mask = union of every instance: RLE of the real mask ∪ polygon rectangle ∪ array diagonal
    image, mask = ds.load(eps[0].query)
    i = int(Path(eps[0].query.key).stem)
    expected = frame(i)[1].copy()
    expected[2:8, 2:12] = True
    expected |= np.eye(90, 160, dtype=bool)
    assert image.shape == (90, 160, 3) and (mask == expected).all()


def test_segmentation_rasterisation_like_pycocotools():
    m = segmentation_mask([[10, 10, 30, 10, 30, 20, 10, 20]], 40, 50)
    ys, xs = np.nonzero(m)
    assert m.sum() == 200 and (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 19, 10, 29)
    uncompressed = {"size": [4, 5], "counts": [0, 1, 5, 1, 13]}     # column-major runs
    assert segmentation_mask(uncompressed, 4, 5).sum() == 2
    assert not segmentation_mask([], 4, 5).any()
    with pytest.raises(DatasetError, match="segmentation size"):
        segmentation_mask(np.ones((3, 3)), 4, 5)


def test_lvis_errors_name_the_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"LVIS/lvis_val\.pkl: annotation pickle not found"):
        LVIS92i(tmp_path, 0)
    build_lvis(tmp_path)
    ds = LVIS92i(tmp_path, 0)
    sample = next(ds.episodes(1)).query
    sample.image.unlink()
    with pytest.raises(DatasetError, match=rf"{sample.key}: LVIS image not found"):
        ds.load(sample)


# ------------------------------------------------------------------------------------------------ PASCAL-Part


def build_pascal_part(root: Path):
    """Index + per-image JSON files; some images hold an instance lacking the part (forcing redraws)."""
    base = root / "Pascal-Part" / "VOCdevkit" / "VOC2010"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "Annotations_Part_json_merged_part_classes").mkdir()
    ids = [f"2008_{i:06d}" for i in range(7)]
    for i, image_id in enumerate(ids):
        image, mask = frame(i)
        Image.fromarray(image).save(base / "JPEGImages" / f"{image_id}.jpg")
        head = mask.copy()
        head[:, 80:] = False
        objects = [{"name": "bird", "bndbox": {"xmin": 5, "ymin": 3, "xmax": 150, "ymax": 80},
                    "parts": [{"name": "HEAD", "mask": [_rle(head)]},
                              {"name": "TORSO", "mask": [_rle(mask & ~head)]}]},
                   {"name": "bird", "bndbox": {"xmin": 0, "ymin": 0, "xmax": 40, "ymax": 30},
                    "parts": [{"name": "TORSO", "mask": [_rle(square(0, 0, 20, (90, 160)))]}]},
                   {"name": "aeroplane", "bndbox": {"xmin": 10, "ymin": 10, "xmax": 100, "ymax": 70},
                    "parts": [{"name": "TAIL", "mask": [_rle(mask)]}, {"name": "BODY", "mask": [_rle(mask)]}]}]
        (base / "Annotations_Part_json_merged_part_classes" / f"{image_id}.json").write_text(
            json.dumps({"object": objects}))
    index = {
        "animals": {"object": {"bird": {"part": {
            "HEAD": {"train": ids[:2], "val": [ids[2], ids[3], ids[3], ids[4]]},
            "TORSO": {"train": ids[:1], "val": ids[2:7]},
            "LEGS": {"train": [], "val": ids[2:4]}}}}},
        "indoor": {"object": {}}, "person": {"object": {}},
        "vehicles": {"object": {"aeroplane": {"part": {
            "TAIL": {"train": ids[:2], "val": ids[2:5]},
            "BODY": {"train": ids[:2], "val": ids[1:6]}}}}}}
    (base / "all_obj_part_to_image.json").write_text(json.dumps(index))
    return base, index


def pascal_reference_episodes(base, index, cat, shot, count):
    """Matcher's rule with the global generator: (class, query id, instance, [(support id, instance)])."""
    annos = {p.stem: json.loads(p.read_text())["object"]
             for p in (base / "Annotations_Part_json_merged_part_classes").glob("*.json")}
    objects = index[cat]["object"]
    classes = [(o, p) for o in objects for p in objects[o]["part"]
               if objects[o]["part"][p]["train"] and objects[o]["part"][p]["val"] and f"{o}+{p}" != "aeroplane+TAIL"]

    def draw(image_id, obj, part):
        insts = [o for o in annos[image_id] if o["name"] == obj]
        inst = np.random.choice(insts, 1, replace=False)[0]
        k = next(i for i, o in enumerate(insts) if o is inst)
        return k if any(p["name"] == part for p in inst["parts"]) else None

    np.random.seed(0)
    out = []
    for idx in range(count):
        obj, part = classes[idx % len(classes)]
        ids = objects[obj]["part"][part]["val"]
        while True:
            qid = np.random.choice(ids, 1, replace=False)[0]
            k = draw(qid, obj, part)
            if k is not None:
                break
        supports = []
        while len(supports) < shot:
            sid = np.random.choice(ids, 1, replace=False)[0]
            if sid == qid or sid in [s for s, _ in supports]:
                continue
            ks = draw(sid, obj, part)
            if ks is not None:
                supports.append((sid, ks))
        out.append((f"{obj}+{part}", f"{qid}#{k}", [f"{s}#{ks}" for s, ks in supports]))
    return classes, out


def test_pascal_part_classes_episodes_and_box_crop(tmp_path):
    base, index = build_pascal_part(tmp_path)
    ds = PascalPart(tmp_path, fold=0, shot=1)
    assert ds.class_names == ["bird+HEAD", "bird+TORSO"]               # LEGS has no train image
    assert len(ds) == 4 + 5 + 2                                         # every val list, duplicates included
    _, ref = pascal_reference_episodes(base, index, "animals", 1, 11)
    eps = list(ds.episodes())
    assert len(eps) == 11
    assert [(ds.class_names[e.class_index], e.query.key, [s.key for s in e.supports]) for e in eps] == ref
    assert all(e.query.key.endswith("#0") for e in eps if e.class_index == 0)     # instance 1 has no HEAD
    _, ref2 = pascal_reference_episodes(base, index, "animals", 2, 6)
    eps2 = list(PascalPart(tmp_path, fold=0, shot=2).episodes(6))
    assert [(e.query.key, [s.key for s in e.supports]) for e in eps2] == [(q, s) for _, q, s in ref2]
    assert all(len({s.key.split("#")[0] for s in e.supports} | {e.query.key.split("#")[0]}) == 3 for e in eps2)
    vehicles = PascalPart(tmp_path, fold=3)
    assert vehicles.class_names == ["aeroplane+BODY"]                  # aeroplane+TAIL excluded
    # box crop: rows ymin:ymax, columns xmin:xmax of the chosen instance, mask = union of the part's masks
    sample = next(e for e in eps if e.class_index == 0).query
    image, mask = ds.load(sample)
    i = int(sample.key.split("#")[0].split("_")[1])
    full_image = np.asarray(Image.open(sample.image).convert("RGB"))
    head = frame(i)[1].copy()
    head[:, 80:] = False
    assert image.shape == (77, 145, 3) and (image == full_image[3:80, 5:150]).all()
    assert (mask == head[3:80, 5:150]).all()
    uncropped = PascalPart(tmp_path, fold=0, box_crop=False)
    assert (uncropped.load(sample)[1] == head).all()


def test_pascal_part_errors_name_the_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"VOC2010/all_obj_part_to_image\.json: not found"):
        PascalPart(tmp_path, 0)
    base, _ = build_pascal_part(tmp_path)
    (base / "Annotations_Part_json_merged_part_classes" / "2008_000002.json").unlink()
    with pytest.raises(DatasetError, match=r"2008_000002\.json: not found"):
        list(PascalPart(tmp_path, 0).episodes())


# ------------------------------------------------------------------------------------------------ PACO-Part


def build_paco(root: Path):
    base = root / "PACO-Part"
    train_ids = [5000 + (i * 5) % 448 for i in range(448)]          # pickle key order ≠ sorted order
    fold0 = [train_ids[4 * v] for v in range(112)]
    img2anno, cid2img = {}, {}
    for i in range(7):
        rel = f"{'train2017' if i % 2 else 'val2017'}/{i:012d}.jpg"
        (base / "coco" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame(i)[0]).save(base / "coco" / rel)
    for c, cid in enumerate(fold0[:4]):
        count = 1 if c == 3 else 3 + c                              # the last class has a single val image
        images = [(c + j) % 7 for j in range(count)]
        cid2img[cid] = [{100 + i: f"/datasets/coco/{'train2017' if i % 2 else 'val2017'}/{i:012d}.jpg"}
                        for i in images]
        cid2img[cid].append(dict(cid2img[cid][0]))                  # duplicate entry: removed
        for i in images:
            mask = frame(i)[1]
            annos = img2anno.setdefault(100 + i, [])
            annos.append({"category_id": cid, "obj_ann_id": 7, "obj_bbox": [1.7, 2.2, 150.6, 80.9],
                          "segmentation": _rle(mask)})
            annos.append({"category_id": cid, "obj_ann_id": 7, "obj_bbox": [1.7, 2.2, 150.6, 80.9],
                          "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]})
            annos.append({"category_id": cid, "obj_ann_id": 9, "obj_bbox": [20.0, 10.0, 30.0, 40.0],
                          "segmentation": [[20, 10, 50, 10, 50, 50, 20, 50]]})
            annos.append({"category_id": 1, "obj_ann_id": 7, "obj_bbox": [0, 0, 5, 5], "segmentation": []})
    (base / "paco").mkdir(parents=True)
    (base / "paco" / "paco_part_train.pkl").write_bytes(
        pickle.dumps({"cid2img": {cid: [] for cid in train_ids}, "img2anno": {}}, protocol=4))
    (base / "paco" / "paco_part_val.pkl").write_bytes(
        pickle.dumps({"cid2img": cid2img, "img2anno": img2anno}, protocol=4))
    return fold0, cid2img, img2anno


def paco_reference_episodes(classes, cid2img, img2anno, shot, count):
    dedup = {}
    for cid, images in cid2img.items():
        seen, dedup[cid] = [], []
        for img in images:
            if list(img.keys())[0] not in seen:
                seen.append(list(img.keys())[0])
                dedup[cid].append(img)

    def instance(image_id, cid):
        objs = []
        for a in img2anno[image_id]:
            if a["category_id"] == cid and a["obj_ann_id"] not in objs:
                objs.append(a["obj_ann_id"])
        return np.random.choice(objs, 1, replace=False)[0]

    np.random.seed(0)
    out = []
    for _ in range(count):
        cid = np.random.choice(classes, 1, replace=False)[0]
        q = np.random.choice(dedup[cid], 1, replace=False)[0]
        qid, qname = list(q.items())[0]
        qname = "/".join(qname.split("/")[-2:])
        qobj = instance(qid, cid)
        supports = []
        while len(supports) < shot:
            s = np.random.choice(dedup[cid], 1, replace=False)[0]
            sid, sname = list(s.items())[0]
            sname = "/".join(sname.split("/")[-2:])
            if sname != qname:
                supports.append(f"{sname}#{instance(sid, cid)}")
        out.append((cid, f"{qname}#{qobj}", supports))
    return out


def test_paco_part_folds_episodes_and_box_crop(tmp_path):
    fold0, cid2img, img2anno = build_paco(tmp_path)
    ds = PacoPart(tmp_path, fold=0, shot=1)
    assert ds.class_ids == fold0[:3]                # fold positions 0, 4, …; classes with > 1 val image only
    assert [len(ds.cid2img[c]) for c in ds.class_ids] == [3, 4, 5]
    ref = paco_reference_episodes(ds.class_ids, cid2img, img2anno, 1, 25)
    eps = list(ds.episodes(25))
    assert [(ds.class_ids[e.class_index], e.query.key, [s.key for s in e.supports]) for e in eps] == ref
    ref2 = paco_reference_episodes(PacoPart(tmp_path, 0, shot=2).class_ids, cid2img, img2anno, 2, 10)
    eps2 = list(PacoPart(tmp_path, 0, shot=2).episodes(10))
    assert [(e.query.key, [s.key for s in e.supports]) for e in eps2] == [(q, s) for _, q, s in ref2]
    # crop rows int(2.2):int(2.2 + 80.9) = 2:83, columns int(1.7):int(1.7 + 150.6) = 1:152
    sample = next(e.query for e in eps if e.query.key.endswith("#7"))
    image, mask = ds.load(sample)
    i = int(Path(sample.key.split("#")[0]).stem)
    expected = frame(i)[1].copy()
    expected[0:10, 0:10] = True
    full_image = np.asarray(Image.open(sample.image).convert("RGB"))
    assert image.shape == (81, 151, 3) and (image == full_image[2:83, 1:152]).all()
    assert (mask == expected[2:83, 1:152]).all()
    other = next(e.query for e in eps if e.query.key.endswith("#9"))
    assert ds.load(other)[1].shape == (40, 30) and ds.load(other)[1].all()     # rows 10:50, cols 20:50


def test_paco_part_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"paco/paco_part_train\.pkl: annotation pickle not found"):
        PacoPart(tmp_path, 0)
    with pytest.raises(DatasetError, match="folds 0-3"):
        PacoPart(tmp_path, 4)


# ------------------------------------------------------------------------------------------------ COCO-20i


def build_coco20i(root: Path, fold=0):
    base = root / "COCO2014"
    names = []
    for i in range(7):
        rel = f"val2014/COCO_val2014_{i:012d}.jpg"
        (base / "val2014").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / "val2014").mkdir(parents=True, exist_ok=True)
        image, mask = frame(i)
        Image.fromarray(image).save(base / rel)
        labels = np.zeros(mask.shape, np.uint8)
        labels[mask] = fold + 1
        labels[0:10, 0:20] = fold + 5
        Image.fromarray(labels).save(base / "annotations" / "val2014" / f"COCO_val2014_{i:012d}.png")
        names.append(rel)
    lists = {c: [names[(c + j) % 7] for j in range(2 + c % 3)] for c in fold_class_ids(fold)}
    (base / "splits" / "val").mkdir(parents=True)
    (base / "splits" / "val" / f"fold{fold}.pkl").write_bytes(pickle.dumps(lists, protocol=2))
    return lists


def test_coco20i_interleaved_folds_episodes_and_masks(tmp_path):
    assert fold_class_ids(1) == list(range(1, 80, 4))
    lists = build_coco20i(tmp_path, fold=0)
    ds = COCO20i(tmp_path, fold=0, shot=1)
    assert ds.class_ids == list(range(0, 80, 4)) and len(ds) == 1000
    np.random.seed(0)
    ref = []
    for _ in range(30):
        c = np.random.choice(ds.class_ids, 1, replace=False)[0]
        q = np.random.choice(lists[c], 1, replace=False)[0]
        while True:
            s = np.random.choice(lists[c], 1, replace=False)[0]
            if s != q:
                break
        ref.append((c, q, [s]))
    eps = list(ds.episodes(30))
    assert [(ds.class_ids[e.class_index], e.query.key, [s.key for s in e.supports]) for e in eps] == ref
    sample = ds._sample(0, lists[0][0])
    image, mask = ds.load(sample)
    expected = frame(0)[1].copy()
    expected[0:10, 0:20] = False
    assert (mask == expected).all()
    rect = np.zeros((90, 160), bool)
    rect[0:10, 0:20] = True
    assert (ds.load(ds._sample(4, lists[4][0]))[1] == rect).all()


def test_coco20i_errors_name_the_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"splits/val/fold2\.pkl"):
        COCO20i(tmp_path, 2)
    lists = build_coco20i(tmp_path)
    ds = COCO20i(tmp_path, 0)
    (tmp_path / "COCO2014" / "annotations" / "val2014" / "COCO_val2014_000000000000.png").unlink()
    with pytest.raises(DatasetError, match=r"COCO_val2014_000000000000\.png: COCO-20i file not found"):
        ds.load(ds._sample(0, lists[0][0]))


# ------------------------------------------------------------------------------------------------ end to end


def run_tool(tool: str, *args: str):
    # one thread: on the shared 2-core machine, torch's thread pool contends with other processes (3× slower)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc


def band_3x3(mask, d):
    """Boundary band by d erosions with a 3×3 square after one pixel of background padding (independent check)."""
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
    return mask & ~eroded.astype(bool)


def luminance(path):
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    return np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) > 0


def test_eval_perseg_end_to_end_and_resume(tmp_path):
    root, out = tmp_path / "perseg", tmp_path / "out"
    objects = build_perseg(root)
    args = ["--root", str(root), "--out", str(out), *TINY]
    proc = run_tool("eval_perseg", *args)
    assert proc.returncode == 0, proc.stderr
    assert "predicted 5, reused 0" in proc.stdout
    assert "2 objects" in proc.stderr                     # the count warning (PerSeg has 40)
    doc = json.loads((out / "perseg.json").read_text())
    assert doc["protocol"]["biou_ratio"] == 0.02 and doc["protocol"]["biou_aggregate"] == "object"
    preds = sorted(p.relative_to(out / "pred").as_posix() for p in (out / "pred").rglob("*.png"))
    assert preds == ["blackswan/01.png", "blackswan/02.png", "blackswan/03.png",
                     "car_shadow/01.png", "car_shadow/02.png"]                       # 00 is the reference
    # recompute every number from the written PNGs
    ious, bious, accs = {}, {}, {}
    for name, frames in objects.items():
        inter = union = gt_area = b_inter = b_union = 0
        for i in range(1, len(frames)):
            gt = luminance(root / "Annotations" / name / f"{i:02d}.png")
            pred = luminance(out / "pred" / name / f"{i:02d}.png")
            assert (gt == frame(frames[i])[1]).all()
            inter += (gt & pred).sum()
            union += (gt | pred).sum()
            gt_area += gt.sum()
            d = max(1, round(0.02 * math.hypot(*gt.shape)))
            bg, bp = band_3x3(gt, d), band_3x3(pred, d)
            b_inter += (bg & bp).sum()
            b_union += (bg | bp).sum()
        ious[name], bious[name], accs[name] = inter / union, b_inter / b_union, inter / gt_area
    assert doc["summary"]["mIoU"] == pytest.approx(100 * np.mean(list(ious.values())), abs=1e-9)
    assert doc["summary"]["bIoU"] == pytest.approx(100 * np.mean(list(bious.values())), abs=1e-9)
    assert doc["summary"]["mAcc"] == pytest.approx(100 * np.mean(list(accs.values())), abs=1e-9)
    assert [r[0] for r in doc["rows"]] == ["blackswan", "car_shadow"]
    assert doc["rows"][0][2] == pytest.approx(100 * ious["blackswan"])
    md = (out / "perseg.md").read_text()
    assert f"| blackswan | 3 | {100 * ious['blackswan']:.2f} | {100 * bious['blackswan']:.2f} |" in md
    assert "| biou_ratio | 0.02 |" in md and "| biou_aggregate | object |" in md
    # second run: nothing recomputed, same numbers; the image aggregation only changes the scoring
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "pred").rglob("*.png")}
    proc = run_tool("eval_perseg", *args, "--biou-aggregate", "image")
    assert proc.returncode == 0, proc.stderr
    assert "predicted 0, reused 5" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "pred").rglob("*.png")} == mtimes
    doc2 = json.loads((out / "perseg.json").read_text())
    assert doc2["summary"]["mIoU"] == doc["summary"]["mIoU"]
    assert doc2["protocol"]["biou_aggregate"] == "image"
    # another method in the same folder is refused
    proc = run_tool("eval_perseg", *args, "--method", "persam_f")
    assert proc.returncode == 2 and "holds another run" in proc.stderr


def test_eval_oneshot_fss_end_to_end_and_resume(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    build_fss(root, ["accordion", "abe's_flyingfish"], layout="hsnet")
    args = ["--dataset", "fss", "--root", str(root), "--episodes", "4", "--out", str(out), *TINY]
    proc = run_tool("eval_oneshot", *args)
    assert proc.returncode == 0, proc.stderr
    assert "computed 4, reused 0" in proc.stdout
    rows = [json.loads(line) for line in (out / "episodes_fold0.jsonl").read_text().splitlines()]
    assert [(r["query"], r["supports"]) for r in rows] == [
        ("abe's_flyingfish/1", ["abe's_flyingfish/3"]), ("abe's_flyingfish/10", ["abe's_flyingfish/4"]),
        ("abe's_flyingfish/2", ["abe's_flyingfish/3"]), ("abe's_flyingfish/3", ["abe's_flyingfish/7"])]
    # recompute the meter from the prediction PNGs and the 518×518 ground truth (PyTorch nearest as oracle)
    inter = np.zeros(2)
    union = np.zeros(2)
    for r in rows:
        gt = np.asarray(Image.open(root / "FSS-1000" / (r["query"] + ".png")).convert("L")) >= 128
        gt = F.interpolate(torch.from_numpy(gt).float()[None, None], size=(518, 518), mode="nearest")[0, 0] > 0
        gt = gt.numpy()
        pred = np.asarray(Image.open(out / "pred" / "fold0" / f"{r['episode']:05d}.png").convert("L")) >= 128
        assert pred.shape == (518, 518)
        counts = ([(~gt & ~pred).sum(), (gt & pred).sum()], [(~gt | ~pred).sum(), (gt | pred).sum()])
        assert (r["intersection"], r["union"]) == ([int(v) for v in counts[0]], [int(v) for v in counts[1]])
        inter += counts[0]
        union += counts[1]
    fg_iou = inter[1] / max(union[1], 1)                  # one class seen, accordion unseen → 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["summary"]["mIoU (mean over folds)"] == pytest.approx(100 * fg_iou / 2)
    assert doc["summary"]["FB-IoU (mean over folds)"] == pytest.approx(100 * np.mean(inter / union))
    assert doc["folds"][0]["mIoU_classes_with_episodes"] == pytest.approx(100 * fg_iou)
    assert doc["summary"]["complete"] is False
    assert doc["protocol"]["size"] == 518 and doc["protocol"]["shot"] == 1
    md = (out / "results.md").read_text()
    assert (f"| 0 | 2 | 4 | 20 | {100 * fg_iou / 2:.2f} | {100 * np.mean(inter / union):.2f} | 0 |") in md
    assert "PARTIAL RUN" in (out / "results.md").read_text()
    # a second run recomputes nothing and gives identical totals
    log_before = (out / "episodes_fold0.jsonl").read_bytes()
    proc = run_tool("eval_oneshot", *args)
    assert proc.returncode == 0, proc.stderr
    assert "computed 0, reused 4" in proc.stdout
    assert (out / "episodes_fold0.jsonl").read_bytes() == log_before
    assert json.loads((out / "results.json").read_text())["summary"] == doc["summary"]
    # other settings in the same folder are refused
    proc = run_tool("eval_oneshot", *args, "--size", "400")
    assert proc.returncode == 2 and "holds another run" in proc.stderr


def test_persam_f_runs_through_both_tools(tmp_path, capsys):
    """PerSAM-F (fit before segmenting) in-process, one PerSeg object and one FSS episode."""
    from vos.cli.eval_oneshot import main as oneshot_main
    from vos.cli.eval_perseg import main as perseg_main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_perseg(tmp_path / "perseg", {"blackswan": [0, 1]})
        assert perseg_main(["--root", str(tmp_path / "perseg"), "--out", str(tmp_path / "o1"),
                            "--method", "persam_f", *TINY]) == 0
        assert "warning: PerSeg at" in capsys.readouterr().err         # 1 object, not 40
        doc = json.loads((tmp_path / "o1" / "perseg.json").read_text())
        assert doc["protocol"]["method"] == "persam_f" and doc["summary"]["images"] == 1
        build_fss(tmp_path / "fss", ["abe's_flyingfish"])
        assert oneshot_main(["--dataset", "fss", "--root", str(tmp_path / "fss"), "--episodes", "1", "--shot", "2",
                             "--method", "persam_f", "--out", str(tmp_path / "o2"), *TINY]) == 0
    finally:
        torch.set_num_threads(threads)
    doc = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert doc["protocol"]["method"] == "persam_f" and doc["protocol"]["shot"] == 2
    assert doc["protocol"]["supports_used"] == "first support only (PerSAM is one-shot)"
    row = json.loads((tmp_path / "o2" / "episodes_fold0.jsonl").read_text())
    assert row["query"] == "abe's_flyingfish/1" and len(row["supports"]) == 2
    assert "computed 1, reused 0" in capsys.readouterr().out


def test_episode_log_drops_an_interrupted_last_line(tmp_path):
    from vos.runs.oneshot import read_done

    log = tmp_path / "episodes_fold0.jsonl"
    good = json.dumps({"episode": 0, "class_index": 0, "intersection": [1, 2], "union": [3, 4]}) + "\n"
    log.write_text(good + '{"episode": 1, "class_ind')
    assert list(read_done(log)) == [0]
    assert log.read_text() == good
    log.write_text(good + "garbage\n")
    with pytest.raises(OutputError, match="episodes_fold0.jsonl:2"):
        read_done(log)


@pytest.mark.parametrize("method", ["persam", "persam_f"])
def test_perseg_scoring_reproduces_the_reference_eval_script(method):
    """``eval_miou.json`` of the PerSAM fixtures: the reference script's counts on its own output PNGs."""
    ref_dir = REPO / "tests" / "data" / "persam_ref"
    expected = json.loads((ref_dir / "eval_miou.json").read_text())[method]
    meter = PooledIoU()
    for case, counts in expected["per_class"].items():
        gt = read_binary_mask(ref_dir / "cases" / case / "inputs" / "test_gt_mask.png")
        pred = read_binary_mask(ref_dir / "cases" / case / method / "output_mask_rgb.png")
        assert mask_counts(gt, pred) == (counts["intersection"], counts["union"], counts["target"])
        meter.add(case, gt, pred)
    summary = meter.summary()
    assert summary["mIoU"] == pytest.approx(100 * expected["mIoU"], abs=1e-6)
    assert summary["mAcc"] == pytest.approx(100 * expected["mAcc"], abs=1e-6)
