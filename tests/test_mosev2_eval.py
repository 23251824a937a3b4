"""MOSEv2 evaluation: conformance with the official ``score.py`` outputs, metric details, layout, rejections.

Conformance cases: every case folder of ``tests/data/mosev2_eval/cases`` and of every directory listed in
``VOS_MOSEV2_EVAL_FIXTURES`` (``os.pathsep``-separated, laid out like ``tests/data/mosev2_eval/cases``: each case has
``case.json`` whose ``gt_root`` is relative to the case folder, ``pred/`` and ``expected/``, see
``tests/data/mosev2_eval/README.md``). A listed directory that is missing gives a failing test.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import evaluator_cases
from PIL import Image

import vos.errors
from vos.datasets.mose import MoseDataset
from vos.errors import DatasetError, EvaluationError, InputError
from vos.eval.davis import disk_kernel
from vos.eval.mosev2 import (
    boundary_widths,
    disk_footprint,
    evaluate,
    format_table,
    metrics_json,
    object_frame_scores,
    segment_means,
    write_outputs,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "mosev2_eval"
REPO_CASES = DATA / "cases"
TOL = 1e-9


# ----------------------------------------------------------------------------------------------------------------
# Conformance cases


def _check_values(result, values: dict) -> None:
    """Every per-frame, per-object and global value equals the official unrounded one."""
    assert sorted(o.name for o in result.objects) == sorted(values["objects"])
    for obj in result.objects:
        want = values["objects"][obj.name]
        assert obj.scored == (not want["errors"] and len(want["J"]) > 0), obj.name
        assert obj.frames == want["frames"][:len(obj.frames)] and len(obj.J) == len(want["J"]), obj.name
        for mine, key in ((obj.J, "J"), (obj.F_new, "F_new"), (obj.F, "F")):
            np.testing.assert_allclose(mine, want[key], rtol=0, atol=TOL, err_msg=f"{obj.name} {key}")
        assert obj.empty_gt.tolist() == want["empty_gt"], obj.name
        merged = (obj.j, obj.f_new, obj.f, obj.disappear_j, obj.disappear_f, obj.reappear_j, obj.reappear_f)
        for mine, theirs in zip(merged, want["merged"]):
            assert (mine is None) == (theirs is None), (obj.name, merged, want["merged"])
            if theirs is not None:
                assert mine == pytest.approx(theirs, abs=TOL), (obj.name, merged, want["merged"])
    for key, theirs in values["global"].items():
        mine = result.means[key]
        assert (np.isnan(mine) and np.isnan(theirs)) or mine == pytest.approx(theirs, abs=TOL), key


def _check_metrics_json(result, expected_text: str) -> None:
    """Text-identical to the official file once its videos are in vos's order (the official order is
    ``os.listdir`` of ``Annotations/``, which depends on the file system) and ``total_time`` is vos's own."""
    official = json.loads(expected_text)
    assert json.dumps(official, indent=4) == expected_text  # the re-serialisation below loses nothing
    assert list(official)[-1] == "total_time"
    reordered = {o.name: official[o.name] for o in result.objects}
    reordered["total_time"] = result.total_time
    assert metrics_json(result) == json.dumps(reordered, indent=4)


def _check_printout(result, stdout: str) -> None:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Video "))
    end = lines.index("Metric evaluation finished")
    mine = format_table(result).splitlines()
    rows = len(result.objects)
    assert mine[0] == lines[header]
    assert sorted(mine[1:1 + rows]) == sorted(lines[header + 1:end])  # rows: same lines, listdir order aside
    assert mine[1 + rows:1 + rows + 8] == lines[end + 1:end + 9]


@pytest.mark.parametrize("case", evaluator_cases(REPO_CASES, "VOS_MOSEV2_EVAL_FIXTURES"))
def test_conformance_case(case: Path, tmp_path: Path):
    assert case.is_dir(), f"fixture directory {case} does not exist"
    spec = json.loads((case / "case.json").read_text())
    gt_root, pred = (case / spec["gt_root"]).resolve(), (case / "pred").resolve()
    official = json.loads((case / "expected" / "official.json").read_text())
    expect = spec["vos"]
    if expect["outcome"] == "ok":
        assert official["exit_code"] == 0
        result = evaluate(gt_root, pred, workers=2 if "main" in spec["gt_root"] else 1)
        _check_values(result, json.loads((case / "expected" / "values.json").read_text()))
        out = tmp_path / "out"
        assert write_outputs(result, out) == [out / "scores.txt", out / "metrics.json"]
        assert (out / "scores.txt").read_bytes() == (case / "expected" / "scores.txt").read_bytes()
        _check_metrics_json(result, (case / "expected" / "metrics.json").read_text())
        assert (out / "metrics.json").read_text() == metrics_json(result)
        _check_printout(result, (case / "expected" / "stdout.txt").read_text())
    else:
        error = getattr(vos.errors, expect["error"])
        with pytest.raises(error) as err:
            evaluate(gt_root, pred)
        message = str(err.value)
        assert "\n" not in message
        assert str((case / expect["names"]).resolve()) in message, message


def test_fixture_cases_have_official_records():
    for case in sorted(REPO_CASES.iterdir()):
        spec = json.loads((case / "case.json").read_text())
        official = json.loads((case / "expected" / "official.json").read_text())
        if spec["vos"]["outcome"] == "ok":
            assert {"scores.txt", "metrics.json", "values.json", "stdout.txt"} <= {
                p.name for p in (case / "expected").iterdir()}, case.name
        elif official["exit_code"] != 0:
            assert official["last_stderr_line"], case.name


def test_official_shifts_frames_where_vos_rejects():
    """What the official tool does with a missing prediction frame: it pairs frames with the sorted file list."""
    values = json.loads((REPO_CASES / "reject_missing_frame" / "expected" / "values.json").read_text())
    assert values["objects"]["s_kite_1"]["frames"] == ["00001", "00003", "00004", "00005"]  # not 00001-00004


# ----------------------------------------------------------------------------------------------------------------
# Metric details (hand-computed)


def test_disk_footprint():
    for r in (1, 3, 8):
        np.testing.assert_array_equal(disk_footprint(float(r)), disk_kernel(r))
    odd, even = disk_footprint(3.918), disk_footprint(4.2)  # skimage.morphology.disk gives 9x9/45 and 10x10/52
    assert odd.shape == (9, 9) and odd.sum() == 45
    assert even.shape == (10, 10) and even.sum() == 52
    assert even[0].sum() == 0 and even[:, 0].sum() == 0  # offsets -4.2 .. 4.8: the first row/col is outside


def test_boundary_widths():
    cap = 0.008 * np.sqrt(240 ** 2 + 427 ** 2)  # 3.918...
    assert boundary_widths((240, 427), 100) == (1.0, 4.0)
    assert boundary_widths((240, 427), 900) == (3.0, 4.0)
    assert boundary_widths((240, 427), 901) == (cap, cap)  # ceil(3.0017) = 4 > cap: capped, non-ceiled
    assert boundary_widths((240, 427), 0) == (cap, cap)  # empty ground truth


def test_frame_scores_edge_cases():
    empty = np.zeros((200, 300), bool)
    fp = empty.copy()
    fp[20:23, 20:23] = True
    assert object_frame_scores(empty, empty) == (1.0, 1.0, 1.0)
    assert object_frame_scores(empty, fp) == (1 / 10, 0.0, 0.0)  # (0 + 1) / (9 + 1); boundary vs none
    assert object_frame_scores(fp, empty) == (1 / 10, 0.0, 0.0)
    assert object_frame_scores(fp, fp) == (1.0, 1.0, 1.0)


def test_tiny_frame_quirk():
    """On a 20x30 frame the cap 0.008·diag = 0.29 gives a disk with no pixel: the official tool scores identical
    masks F = 1/6 (observed with metricsv2 and scikit-image 0.26)."""
    square = np.zeros((20, 30), bool)
    square[2:5, 2:5] = True
    j, f_new, f = object_frame_scores(square, square)
    assert not disk_footprint(0.008 * np.sqrt(20 ** 2 + 30 ** 2)).any()
    assert j == 1.0 and f_new == f == pytest.approx(1 / 6, abs=1e-15)


def test_segment_means():
    empty = np.array([True, False, False, True, True, False, False])
    J = np.array([0.9, 0.1, 0.3, 0.5, 0.7, 0.2, 0.6])
    F = J / 2
    dj, df, rj, rf = segment_means(J, F, empty)
    assert dj == pytest.approx(0.6) and df == pytest.approx(0.3)  # frames 3-4; the run at frame 0 is dropped
    assert rj == pytest.approx((0.2 + 0.4) / 2) and rf == pytest.approx(0.15)  # frames 1-2 (late first) and 5-6
    assert segment_means(J, F, np.zeros(7, bool)) == (None, None, None, None)
    assert segment_means(J, F, np.ones(7, bool)) == (None, None, None, None)
    dj, _, rj, _ = segment_means(J, F, np.array([False, True, True, True, True, True, True]))
    assert dj == pytest.approx(np.mean(J[1:])) and rj is None  # leaves for good


# ----------------------------------------------------------------------------------------------------------------
# Small synthetic roots


def _png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), "L").convert("P").save(path)


def _square(t: int, shape=(24, 32)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[4:12, 2 + t:12 + t] = 1
    return labels


def _root(tmp_path: Path, videos: dict[str, int]) -> Path:
    root = tmp_path / "gt"
    meta = {}
    for name, n in videos.items():
        for t in range(n):
            _png(root / "Annotations" / name / f"{t:05d}.png", _square(t))
        meta[name] = {"length": n, "height": 24, "width": 32, "objects": {"1": {}}}
    (root / "meta.json").write_text(json.dumps({"videos": meta}))
    return root


def _preds(results: Path, name: str, n: int) -> None:
    for t in range(n):
        _png(results / name / f"{t:05d}.png", _square(t))


def test_single_video_folder_is_not_descended_into(tmp_path):
    root = _root(tmp_path, {"a": 5, "b": 5})
    _preds(tmp_path / "res", "a", 5)
    result = evaluate(root, tmp_path / "res")
    assert result.missing_videos == ["b"]
    scores = {o.name: (o.scored, o.j) for o in result.objects}
    assert scores == {"a_1": (True, 1.0), "b_1": (False, 0.0)}
    assert "scored 0: b" in format_table(result)
    entry = json.loads(metrics_json(result))["b_1"]
    assert entry == {"J&F_new": 0.0, "J": 0, "F_new": 0, "disappear_J&F_new": None, "reappear_J&F_new": None,
                     "F": 0, "J&F": 0.0}
    assert '"J": 0,' in metrics_json(result)  # the official integer zero
    _preds(tmp_path / "wrapped" / "top", "a", 5)
    _preds(tmp_path / "wrapped" / "top", "b", 5)
    assert evaluate(root, tmp_path / "wrapped").means["J"] == 1.0


def test_workers_do_not_change_results():
    case = REPO_CASES / "main_fp_late_redetect"
    gt = (case / "../../gt/main").resolve()
    one, two = evaluate(gt, case / "pred"), evaluate(gt, case / "pred", workers=2, progress=True)
    assert [o.name for o in one.objects] == [o.name for o in two.objects]
    assert one.means == two.means
    for a, b in zip(one.objects, two.objects):
        np.testing.assert_array_equal(a.F_new, b.F_new)


def test_layout_and_argument_errors(tmp_path):
    root = _root(tmp_path, {"a": 5, "b": 5})
    _preds(tmp_path / "res", "a", 5)
    _preds(tmp_path / "res", "b", 5)
    with pytest.raises(InputError, match="no set"):
        evaluate(root, tmp_path / "res", set="valid")
    with pytest.raises(InputError, match="workers"):
        evaluate(root, tmp_path / "res", workers=0)
    with pytest.raises(EvaluationError, match="results folder not found"):
        evaluate(root, tmp_path / "nothing")
    _png(tmp_path / "res" / "b" / "00002.png", np.full((24, 32), 255, np.uint8))
    with pytest.raises(EvaluationError, match=r"b/00002\.png: contains id 255"):
        evaluate(root, tmp_path / "res")
    _png(tmp_path / "res" / "b" / "00002.png", _square(2))
    _png(root / "Annotations" / "a" / "00003.png", np.zeros((24, 31), np.uint8))
    with pytest.raises(DatasetError, match=r"a/00003\.png: 31x24 but the video is 32x24"):
        evaluate(root, tmp_path / "res")
    shutil.copytree(root / "Annotations" / "a", root / "Annotations" / "c")
    with pytest.raises(DatasetError, match=r"Annotations/c: video 'c' is not in"):
        MoseDataset(root)
    (root / "Annotations" / "c" / "x.txt").write_text("")
    meta = json.loads((root / "meta.json").read_text())
    meta["videos"]["c"] = dict(meta["videos"]["a"], length=6)
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"c/x\.txt: not an annotation frame"):
        MoseDataset(root)
    (root / "meta.json").write_text("{}")
    with pytest.raises(DatasetError, match="meta.json: not a MOSEv2 meta file"):
        MoseDataset(root)


def test_dataset_reader():
    ds = MoseDataset(DATA / "gt" / "main")
    assert sorted(ds.names) == ["car", "kite", "moto", "swan"]
    moto = next(v for v in ds if v.name == "moto")
    assert len(moto) == 24 and moto.frame_names[0] == "00000" and moto.size == (200, 356)
    assert moto.object_keys == ("1", "2") and moto.frames_dir is None
    starts = moto.objects()
    assert starts[1].first_frame == "00000" and starts[2].first_frame == "00007"  # late first appearance
    assert starts[2].annotation == DATA / "gt" / "main" / "Annotations" / "moto" / "00007.png"
    car = next(v for v in ds if v.name == "car")
    assert list(car.objects()) == [1]  # object 2 is in the meta only
    small = {v.name: v for v in MoseDataset(DATA / "gt" / "small")}
    assert small["s_three"].size is None and small["s_three"].label_map(0).shape == (120, 214)


def test_eval_modules_do_not_import_torch():
    code = "import sys, vos.eval.mosev2, vos.datasets.mose; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          check=False)
    assert done.returncode == 0
