"""DAVIS 2017 evaluation: conformance with the official tool's outputs, metric details, dataset layout, CLI.

Conformance cases: every case folder of ``tests/data/davis_eval/fixtures/davis_eval`` and of every directory listed in
``VOS_DAVIS_EVAL_FIXTURES`` (``os.pathsep``-separated, laid out like ``shared/fixtures/davis_eval``). A case's
``gt_root`` is resolved relative to the case folder; when that path does not exist the in-repo davis-mini copy
(``tests/data/davis_eval/data/davis-mini``) is used.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import evaluator_cases
from PIL import Image

from vos.cli.common import run
from vos.cli.eval_davis import main as eval_davis_main
from vos.datasets.davis import DavisDataset
from vos.errors import DatasetError, EvaluationError
from vos.eval.davis import (boundary_f, boundary_radius, decay_bin_edges, disk_kernel, evaluate_davis, object_scores,
                            seg2bmap, statistics, write_csvs)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "davis_eval"
REPO_FIXTURES = DATA / "fixtures" / "davis_eval"
REPO_GT = DATA / "data" / "davis-mini"
TOL = 1e-9


# ----------------------------------------------------------------------------------------------------------------
# Conformance cases


def _load_case(case: Path) -> tuple[dict, Path]:
    assert case.is_dir(), f"fixture directory {case} does not exist"
    spec = json.loads((case / "case.json").read_text())
    gt_root = (case / spec["gt_root"]).resolve()
    return spec, (gt_root if gt_root.is_dir() else REPO_GT)


def _check_metrics(result, expected: dict) -> None:
    assert [s.name for s in result.sequences] == list(expected["sequences"])
    for seq in result.sequences:
        want = expected["sequences"][seq.name]
        assert seq.frames == want["frames"]
        assert seq.n_pred_ids == want["n_pred_ids"]
        assert [str(o.id) for o in seq.objects] == list(want["objects"])
        for obj in seq.objects:
            w = want["objects"][str(obj.id)]
            for metric, values, stats in (("J", obj.J, obj.J_stats), ("F", obj.F, obj.F_stats)):
                assert len(values) == len(w[metric])
                np.testing.assert_allclose(values, w[metric], rtol=0, atol=TOL, err_msg=f"{seq.name} {obj.id}")
                assert stats.mean == pytest.approx(w[f"{metric}_mean"], abs=TOL)
                assert stats.recall == pytest.approx(w[f"{metric}_recall"], abs=TOL)
                assert stats.decay == pytest.approx(w[f"{metric}_decay"], abs=TOL)
    assert set(result.global_) == set(expected["global"])
    for key, value in expected["global"].items():
        assert result.global_[key] == pytest.approx(value, abs=TOL), key


def _expected_error_text(spec: dict) -> list[str]:
    """Substrings our EvaluationError must contain, derived from what the official tool printed."""
    official = spec.get("official_message", "")
    missing = re.search(r"(\S+) frame (\S+) not found!", official)
    if missing:
        return [missing.group(1), f"frame {missing.group(2)} not found", f"{missing.group(2)}.png"]
    if "index higher than the number of objects" in official:
        return ["contains", "object(s)"]
    if "dimensions do not match" in official:
        return ["but the ground truth is"]
    return []


@pytest.mark.parametrize("case", evaluator_cases(REPO_FIXTURES, "VOS_DAVIS_EVAL_FIXTURES"))
def test_conformance_case(case: Path, tmp_path: Path):
    spec, gt_root = _load_case(case)
    sequences = spec["sequences"]
    workers = 2 if len(sequences) > 1 else 1
    if spec["official_outcome"] == "ok":
        result = evaluate_davis(gt_root, case / "pred", sequences=sequences, workers=workers, progress=False)
        for written in write_csvs(result, tmp_path, "val"):
            assert written.read_bytes() == (case / "expected" / written.name).read_bytes(), written.name
        _check_metrics(result, json.loads((case / "expected" / "metrics.json").read_text()))
    else:
        assert spec["official_outcome"] in ("aborted", "crashed"), spec["official_outcome"]
        with pytest.raises(EvaluationError) as err:
            evaluate_davis(gt_root, case / "pred", sequences=sequences, workers=workers, progress=False)
        message = str(err.value)
        assert any(seq in message for seq in sequences), message
        assert str(case / "pred") in message, message  # names the file
        for part in _expected_error_text(spec):
            assert part in message, (part, message)


def test_repo_fixtures_cover_every_case():
    """The in-repo copy holds every case of the shared index, with its expected outputs."""
    index = json.loads((REPO_FIXTURES / "index.json").read_text())
    assert sorted(index) == sorted(p.name for p in REPO_FIXTURES.iterdir() if p.is_dir())
    for name, entry in index.items():
        expected = {p.name for p in (REPO_FIXTURES / name / "expected").iterdir()}
        if entry["official_outcome"] == "ok":
            assert {"global_results-val.csv", "per-sequence_results-val.csv", "metrics.json"} <= expected


# ----------------------------------------------------------------------------------------------------------------
# Hand-computed metric checks


def test_seg2bmap_border_rule():
    m = np.array([[0, 0, 0, 0],
                  [0, 1, 1, 1],
                  [0, 1, 1, 1],
                  [0, 0, 0, 0]], dtype=bool)
    # top/left: the background pixel before the object; bottom: the object's own last row; the right image edge
    # (column 3, rows 1-2) is no boundary except where the object ends below it (2, 3); the last row compares
    # only horizontally.
    expected = np.array([[1, 1, 1, 1],
                         [1, 0, 0, 0],
                         [1, 1, 1, 1],
                         [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(m), expected)
    assert not seg2bmap(np.ones((5, 7), bool)).any()
    assert not seg2bmap(np.zeros((5, 7), bool)).any()


def test_disk_and_radius():
    assert boundary_radius((480, 854)) == 8
    assert boundary_radius((1080, 1920)) == 18
    kernel = disk_kernel(8)
    assert kernel.shape == (17, 17) and kernel.sum() == 197
    assert kernel[0, 8] == 1 and kernel[0, 7] == 0 and kernel[8, 0] == 1


def _boundary_f_whole_image(gt, pred, radius):
    """Straight spec transcription on the whole image (no bounding-box shortcut)."""
    bg, bp = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_fg = int(bg.sum()), int(bp.sum())
    if n_gt == 0 and n_fg == 0:
        return 1.0
    if n_gt == 0 or n_fg == 0:
        return 0.0
    k = disk_kernel(radius)
    p = (bp & (cv2.dilate(bg.astype(np.uint8), k) > 0)).sum() / n_fg
    r = (bg & (cv2.dilate(bp.astype(np.uint8), k) > 0)).sum() / n_gt
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_scores_on_roi_equal_whole_image():
    rng = np.random.default_rng(0)
    for _ in range(60):
        gt = np.zeros((30, 41), bool)
        pred = np.zeros((30, 41), bool)
        for mask in (gt, pred):
            for _ in range(rng.integers(0, 3)):
                y, x = rng.integers(-5, 30), rng.integers(-5, 41)
                mask[max(y, 0):y + rng.integers(1, 15), max(x, 0):x + rng.integers(1, 15)] = True
            mask ^= rng.random(mask.shape) < 0.02
        union = np.count_nonzero(gt | pred)
        j = 1.0 if union == 0 else np.count_nonzero(gt & pred) / union
        assert object_scores(gt, pred, disk_kernel(3)) == (j, _boundary_f_whole_image(gt, pred, 3))
        assert boundary_f(gt, pred, 3) == _boundary_f_whole_image(gt, pred, 3)


def test_boundary_f_conventions():
    empty, square = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    square[5:10, 5:10] = True
    assert boundary_f(empty, empty, 2) == 1.0
    assert boundary_f(square, empty, 2) == 0.0 and boundary_f(empty, square, 2) == 0.0
    full = np.ones((20, 20), bool)  # no boundary at all, but not empty
    assert boundary_f(full, full, 2) == 1.0
    assert boundary_f(full, square, 2) == 0.0


def test_decay_bins_n48():
    assert decay_bin_edges(48) == [0, 12, 24, 35, 47]
    v = np.zeros(48)
    v[12], v[35], v[20] = 1.0, 0.6, 0.5  # 12 and 35 are shared edge frames of the first and the last bin
    stats = statistics(v)
    assert stats.decay == pytest.approx((1.0 / 13) - (0.6 / 13), abs=1e-15)
    assert stats.recall == pytest.approx(2 / 48, abs=1e-15)  # 0.5 is not > 0.5
    assert stats.mean == pytest.approx(2.1 / 48, abs=1e-15)


def test_decay_bins_round_half_up_and_uint8_wrap():
    assert decay_bin_edges(3) == [0, 1, 1, 2, 2]  # 1.5 -> 2 and 2.5 -> 3, not half-to-even
    assert decay_bin_edges(300) == [0, 75, 150, 224, 43]  # uint8 wrap, as the official code
    assert decay_bin_edges(300) == [int(i) for i in np.round(np.linspace(1, 300, 5) + 1e-10).astype(np.int64)
                                    .__sub__(1).astype(np.uint8)]
    assert np.isnan(statistics(np.ones(300)).decay)  # the last bin v[224:44] is empty


# ----------------------------------------------------------------------------------------------------------------
# Small synthetic DAVIS roots


def write_png(path: Path, labels: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(labels.astype(np.uint8))
    if mode == "P":
        img = Image.frombytes("P", img.size, img.tobytes())
        img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255] * (252 * 3))
    elif mode == "RGB":
        img = img.convert("RGB")
    img.save(path)


def moving_square(frames: int, ids=(1,), size=(24, 32)) -> list[np.ndarray]:
    out = []
    for t in range(frames):
        labels = np.zeros(size, np.uint8)
        for i, k in enumerate(ids):
            labels[3 + 8 * i:9 + 8 * i, 2 + t:10 + t] = k
        out.append(labels)
    return out


def make_davis(root: Path, seqs: dict[str, list[np.ndarray]], jpegs: bool = False) -> Path:
    for name, labels in seqs.items():
        for t, lab in enumerate(labels):
            write_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", lab)
            if jpegs:
                rgb = np.dstack([lab * 40, np.full_like(lab, 100), np.full_like(lab, 7)])
                (root / "JPEGImages" / "480p" / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", quality=95)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in seqs))
    return root


def write_predictions(results: Path, name: str, labels: list[np.ndarray], mode: str = "P") -> None:
    for t, lab in enumerate(labels):
        write_png(results / name / f"{t:05d}.png", lab, mode)


def test_void_prediction_rejected_before_any_per_id_work(tmp_path):
    gt = moving_square(6, ids=(1, 2))
    root = make_davis(tmp_path / "davis", {"sq": gt})
    pred = [lab.copy() for lab in gt]
    pred[3][0, 0] = 255
    write_predictions(tmp_path / "res", "sq", pred)
    with pytest.raises(EvaluationError, match=r"sq: .*00003\.png contains void \(255\).*2 object"):
        evaluate_davis(root, tmp_path / "res", progress=False)


def test_rgb_prediction_rejected_and_grayscale_accepted(tmp_path):
    gt = moving_square(5)
    root = make_davis(tmp_path / "davis", {"sq": gt})
    write_predictions(tmp_path / "rgb", "sq", gt, mode="RGB")
    with pytest.raises(EvaluationError, match=r"00001\.png is a mode-RGB image"):
        evaluate_davis(root, tmp_path / "rgb", progress=False)
    write_predictions(tmp_path / "gray", "sq", gt, mode="L")
    assert evaluate_davis(root, tmp_path / "gray", progress=False).global_["J&F-Mean"] == 1.0


def test_gt_void_is_background_and_first_last_not_scored(tmp_path):
    gt = moving_square(5, ids=(1, 2))
    gt[2][0:2, :] = 255  # void in a scored ground-truth frame counts as background
    root = make_davis(tmp_path / "davis", {"sq": gt})
    pred = [np.where(lab == 255, 0, lab) for lab in gt]
    pred[0][:] = 0  # first and last prediction differ wildly: not scored
    pred[-1][:] = 2
    write_predictions(tmp_path / "res", "sq", pred)
    result = evaluate_davis(root, tmp_path / "res", progress=False)
    assert result.sequences[0].frames == ["00001", "00002", "00003"]
    assert result.global_["J&F-Mean"] == 1.0


# ----------------------------------------------------------------------------------------------------------------
# Dataset layout


def test_dataset_on_annotations_only_copy():
    ds = DavisDataset(REPO_GT)
    assert ds.sequences == ["blackswan", "car-shadow", "kite-surf", "motocross-jump"]
    kite = ds["kite-surf"]
    assert len(kite) == 50 and kite.frame_names[0] == "00000" and kite.frame_names[-1] == "00049"
    assert kite.object_ids == [1, 2, 3]
    first = kite.first_label_map
    assert first.dtype == np.uint8 and first.shape == (480, 854)
    maps = kite.label_maps()
    assert not isinstance(maps, (list, tuple))
    np.testing.assert_array_equal(next(maps), first)
    with pytest.raises(DatasetError, match="no JPEGImages"):
        next(kite.frames())


def test_dataset_with_frames_and_layout_errors(tmp_path):
    root = make_davis(tmp_path / "d", {"a": moving_square(4), "b": moving_square(3, ids=(2,))}, jpegs=True)
    ds = DavisDataset(root)
    frames = ds["a"].frames()
    frame = next(frames)
    assert frame.dtype == np.uint8 and frame.shape == (24, 32, 3)
    assert ds["b"].object_ids == [2]
    for extra in ("00001.png", "00002.png"):  # test-dev layout: only the first frame annotated
        (root / "Annotations" / "480p" / "b" / extra).unlink()
    b = DavisDataset(root)["b"]
    assert not b.has_ground_truth and len(b) == 3 and b.object_ids == [2]
    with pytest.raises(DatasetError, match="only the first frame"):
        b.label_map(1)
    (root / "JPEGImages" / "480p" / "a" / "00003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"a: 3 JPEG frames .* but 4 annotation PNGs"):
        DavisDataset(root)
    (root / "ImageSets" / "2017" / "val.txt").write_text("b\nzebra\n")
    with pytest.raises(DatasetError, match=re.escape(str(root / "Annotations" / "480p" / "zebra"))):
        DavisDataset(root)
    with pytest.raises(DatasetError, match="not listed"):
        DavisDataset(root, only=["a"])
    with pytest.raises(DatasetError, match=re.escape(str(root / "ImageSets" / "2017" / "test-dev.txt"))):
        DavisDataset(root, set="test-dev")
    with pytest.raises(DatasetError, match="Full-Resolution"):
        DavisDataset(root, resolution="Full-Resolution")


def test_eval_modules_do_not_import_torch():
    code = "import sys, vos.eval.davis, vos.datasets.davis; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0


# ----------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_writes_fresh_csvs_and_chart(tmp_path, capsys):
    gt = moving_square(6, ids=(1, 2))
    root = make_davis(tmp_path / "davis", {"sq": gt, "other": moving_square(5)})
    pred = [lab.copy() for lab in gt]
    pred[2][pred[2] == 2] = 0  # object 2 missing in one scored frame
    write_predictions(tmp_path / "res", "sq", pred)
    out = tmp_path / "out"
    out.mkdir()
    (out / "global_results-val.csv").write_text("stale\n")  # never reused
    status = run(eval_davis_main, ["--davis-root", str(root), "--results", str(tmp_path / "res"),
                                   "--out", str(out), "--sequences", "sq", "--no-progress"])
    assert status == 0
    assert (out / "global_results-val.csv").read_text() == (
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n0.875,0.875,0.875,-0.250,0.875,0.875,-0.250\n")
    assert (out / "per-sequence_results-val.csv").read_text() == (
        "Sequence,J-Mean,F-Mean\nsq_1,1.000,1.000\nsq_2,0.750,0.750\n")
    with Image.open(out / "per-sequence_JF-val.png") as chart:
        assert chart.format == "PNG" and chart.size[0] > 100
    assert "sq_2" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["global_results-val.csv", "per-sequence_JF-val.png",
                                                     "per-sequence_results-val.csv"]


def test_cli_rejected_prediction_set(tmp_path):
    gt = moving_square(5)
    root = make_davis(tmp_path / "davis", {"sq": gt})
    pred = [lab.copy() for lab in gt]
    pred[2][0, 0] = 3
    write_predictions(tmp_path / "res", "sq", pred)
    done = subprocess.run([sys.executable, str(REPO / "tools" / "eval_davis.py"), "--davis-root", str(root),
                           "--results", str(tmp_path / "res")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: sq: {tmp_path / 'res' / 'sq' / '00002.png'} contains object id 3 "
                                        f"but the first ground-truth frame has 1 object(s), ids 1..1"]
    assert not list((tmp_path / "res").glob("*.csv"))
