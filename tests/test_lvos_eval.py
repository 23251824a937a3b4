"""LVOS evaluation: conformance with the official ``lvos-evaluation`` outputs, rejection cases, metric rules, layout.

Conformance cases: every case folder of ``tests/data/lvos_eval/cases`` and of every directory listed in
``VOS_LVOS_EVAL_FIXTURES`` (``os.pathsep``-separated, laid out like ``tests/data/lvos_eval/cases``). A case's
``gt_root`` is resolved relative to the case folder; when that path does not exist the in-repo root of the same name
(``tests/data/lvos_eval/gt/<name>``) is used. ``make_cases.py`` there regenerates them with the official tool.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import evaluator_cases
from PIL import Image

from vos.datasets.lvos import FrameRange, LvosDataset
from vos.datasets.lvos_unseen import UNSEEN_VIDEOS
from vos.errors import DatasetError, EvaluationError, InputError
from vos.eval.lvos import (
    GLOBAL_COLUMNS,
    ObjectResult,
    VideoResult,
    evaluate,
    format_table,
    global_metrics,
    temporal_variability,
    write_outputs,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "lvos_eval"
REPO_CASES = DATA / "cases"
REPO_GT = DATA / "gt"
TOL = 1e-9


# ----------------------------------------------------------------------------------------------------------------
# Conformance cases


def _load_case(case: Path) -> tuple[dict, Path]:
    assert case.is_dir(), f"fixture directory {case} does not exist"
    spec = json.loads((case / "case.json").read_text())
    gt_root = (case / spec["gt_root"]).resolve()
    return spec, (gt_root if gt_root.is_dir() else REPO_GT / gt_root.name)


def _same(value: float, want) -> bool:
    """Equal within TOL; ``None`` in values.json is the official NaN."""
    return math.isnan(value) if want is None else abs(value - want) <= TOL


def _check_values(result, expected: dict) -> None:
    objects = list(result.objects())
    assert [o.row for o in objects] == [w["row"] for w in expected["objects"]]
    unseen = {o.row for v in result.videos if v.unseen for o in v.objects}
    assert sorted(unseen) == sorted(expected["unseen_rows"])
    assert len(objects) == len(expected["seen_rows"]) + len(expected["unseen_rows"])
    for obj, want in zip(objects, expected["objects"]):
        assert str(obj.id) == want["id"]
        for mine, theirs in ((obj.J, want["J"]), (obj.F, want["F"])):
            assert len(mine) == len(theirs), obj.row
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOL, err_msg=obj.row)
        for name, value in (("J_mean", obj.J_mean), ("F_mean", obj.F_mean), ("V", obj.V)):
            assert _same(value, want[name]), (obj.row, name, value, want[name])
    assert list(result.global_) == list(expected["global"]) == list(GLOBAL_COLUMNS)
    for name, want in expected["global"].items():
        assert _same(result.global_[name], want), (name, result.global_[name], want)


def _expected_error_parts(spec: dict) -> list[str]:
    """Substrings our EvaluationError must contain: the case's own, plus what the official tool printed."""
    parts = [spec["vos_error"]]
    for line in spec.get("official_message", []):
        missing = re.search(r"(\S+) frame (\S+) not found!", line)
        if missing:
            parts.append(missing.group(1))
            if spec["description"] != "a whole prediction video is missing":
                parts.append(f"{missing.group(2)}.png")
        shapes = re.search(r"Annotation\((\(.*?\))\) and segmentation:(\(.*?\)) dimensions do not match", line)
        if shapes:  # an extra axis is a colour image, otherwise the sizes differ
            gt, pred = (len(shape.split(",")) for shape in shapes.groups())
            parts.append("is a mode-" if pred > gt else "but the ground truth is")
    return parts


@pytest.mark.parametrize("case", evaluator_cases(REPO_CASES, "VOS_LVOS_EVAL_FIXTURES"))
def test_conformance_case(case: Path, tmp_path: Path):
    spec, gt_root = _load_case(case)
    out = tmp_path / "out"
    if spec["vos_outcome"] == "ok":
        assert spec["official_outcome"] == "ok"
        result = evaluate(gt_root, case / "pred", spec["set"], workers=2)
        written = write_outputs(result, out)
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written) == sorted(
            p.name for p in (case / "expected").glob("*.csv"))
        for path in written:
            assert path.read_bytes() == (case / "expected" / path.name).read_bytes(), path.name
        _check_values(result, json.loads((case / "expected" / "values.json").read_text()))
    else:
        assert spec["vos_outcome"] == "rejected"
        # the official tool exits 0 without CSVs, crashes, or (unknown id) scores while ignoring the id
        assert spec["official_outcome"] in ("exit0_no_output", "crashed", "ok"), spec["official_outcome"]
        if spec["official_outcome"] != "ok":
            assert not list((case / "expected").glob("*.csv"))
        with pytest.raises(EvaluationError) as err:
            write_outputs(evaluate(gt_root, case / "pred", spec["set"], workers=2), out)
        message = str(err.value)
        assert "\n" not in message and str(case / "pred") in message, message  # one line, names the file
        for part in _expected_error_parts(spec):
            assert part in message, (part, message)
        assert not out.exists()


def test_repo_cases_cover_the_brief():
    names = {p.name for p in REPO_CASES.iterdir() if p.is_dir()}
    assert {"perfect", "perturbed", "perturbed_test", "empty_pred", "short_objects", "unscored_missing", "unknown_id",
            "missing_frame", "missing_video", "wrong_size", "rgb_pred"} <= names
    for name in names:
        spec = json.loads((REPO_CASES / name / "case.json").read_text())
        if spec["official_outcome"] == "ok":
            expected = {p.name for p in (REPO_CASES / name / "expected").iterdir()}
            assert {f"global_results-{spec['set']}.csv", f"per-sequence_results-{spec['set']}.csv",
                    "values.json", "stdout.txt"} <= expected
    test_split = (REPO_CASES / "perturbed_test" / "expected" / "global_results-test.csv").read_text().splitlines()
    assert test_split[1].startswith(",,")  # the official NaN of a split without unseen videos


# ----------------------------------------------------------------------------------------------------------------
# Rules, by hand


def test_scored_frames_rule():
    assert FrameRange(20, 65, 10).scored() == [(k - 1, 20 + 5 * k) for k in range(1, 9)]  # neither 20 nor 65
    assert FrameRange(20, 65, 10).slots == 8
    assert FrameRange(0, 5, 2).scored() == [] and FrameRange(0, 5, 2).slots == 0
    assert FrameRange(25, 35, 3).scored() == [(0, 30)]
    # frame_nums larger than the walk: slots 4 and 5 are never filled (the official arrays keep 0 there)
    assert FrameRange(0, 25, 8).scored() == [(0, 5), (1, 10), (2, 15), (3, 20)]
    assert FrameRange(0, 25, 8).slots == 6


def test_variability_is_rounded_before_the_square_root():
    j = np.array([1.0, 0.2])
    f = np.array([1.0, 0.2])
    assert temporal_variability(j, f) == pytest.approx(0.4, abs=1e-15)  # variance 0.16
    j = np.array([0.5, 0.514])  # variance 0.000049 rounds to 0.0000 -> V = 0, not 0.007
    assert temporal_variability(j, j) == 0.0
    j = np.array([0.5, 0.52])  # variance 0.0001 exactly representable enough: sqrt(0.0001) = 0.01
    assert temporal_variability(j, j) == pytest.approx(0.01, abs=1e-15)
    assert math.isnan(temporal_variability(np.zeros(0), np.zeros(0)))


def _obj(row: str, j: list[float], f: list[float]) -> ObjectResult:
    return ObjectResult(1, row, [], np.array(j), np.array(f))


def test_global_means_average_the_two_halves():
    seen = VideoResult("a", False, [_obj("a_1", [1.0], [1.0]), _obj("a_2", [0.0], [0.5])])
    unseen = VideoResult("R3UJGYwy", True, [_obj("R3UJGYwy_1", [0.2], [0.4])])
    g = global_metrics([seen, unseen])
    assert g["J-seen-Mean"] == 0.5 and g["J-unseen-Mean"] == pytest.approx(0.2)
    assert g["J-Mean"] == pytest.approx(0.35)  # not the mean over the three objects (0.4)
    assert g["J&F-Mean"] == pytest.approx((0.5 + 0.75 + 0.2 + 0.4) / 4)
    only_seen = global_metrics([seen])
    assert math.isnan(only_seen["J&F-Mean"]) and math.isnan(only_seen["J-unseen-Mean"])
    assert only_seen["F-seen-Mean"] == 0.75
    empty_object = VideoResult("b", False, [_obj("b_1", [], [])])  # no scored frame: its half becomes NaN
    assert math.isnan(global_metrics([seen, empty_object, unseen])["J-seen-Mean"])


def test_unseen_list():
    assert len(UNSEEN_VIDEOS) == len(set(UNSEEN_VIDEOS)) == 51
    assert all(re.fullmatch(r"[A-Za-z0-9]{8}", name) for name in UNSEEN_VIDEOS)


# ----------------------------------------------------------------------------------------------------------------
# Layout and bad input


def _write_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8)).save(path)


def _tiny_root(root: Path, objects: dict, frames: int = 4) -> Path:
    """One video ``v``: a square of id 1 in every annotated frame (``5·k``), meta ``objects`` as given."""
    for k in range(frames):
        labels = np.zeros((20, 30), np.uint8)
        labels[5:12, 3 + k:12 + k] = 1
        _write_png(root / "Annotations" / "v" / f"{5 * k:08d}.png", labels)
    (root / "valid_meta.json").write_text(json.dumps({"videos": {"v": {"objects": objects}}}))
    return root


def _range(start, end, n) -> dict:
    return {"frame_range": {"start": start, "end": end, "frame_nums": n}}


def test_dataset_layout(tmp_path):
    root = _tiny_root(tmp_path / "lvos", {"1": _range("5", "15", 3)})
    video = LvosDataset(root)["v"]
    assert video.frames_dir is None and list(video.objects) == [1]
    assert video.objects[1].first_frame == "00000005"
    assert video.objects[1].annotation == root / "Annotations" / "v" / "00000005.png"
    (root / "JPEGImages" / "v").mkdir(parents=True)
    assert LvosDataset(root)["v"].frames_dir == root / "JPEGImages" / "v"


@pytest.mark.parametrize("objects, message", [
    ({"1": _range(0, 15, 1)}, "frame_nums is 1"),
    ({"1": _range(0, 15, 2)}, r"range\(0, 15, 5\) has 3 frames, more than frame_nums = 2"),
    ({"1": _range(0, "x", 4)}, "frame_range.end is 'x', not a number"),
    ({"one": _range(0, 15, 4)}, "object key videos.v.objects.one"),
    ({"0": _range(0, 15, 4)}, "1..255"),
    ({"1": _range(0, 15, 4), "01": _range(0, 15, 4)}, "appears twice"),
    ({"1": {"range": {}}}, "no 'frame_range' entry"),
])
def test_bad_meta(tmp_path, objects, message):
    root = _tiny_root(tmp_path / "lvos", objects)
    with pytest.raises(DatasetError, match=message) as err:
        evaluate(root, tmp_path)
    assert str(root / "valid_meta.json") in str(err.value)


def test_missing_meta_and_bad_set(tmp_path):
    root = _tiny_root(tmp_path / "lvos", {"1": _range(0, 15, 4)})
    with pytest.raises(DatasetError, match=re.escape(str(root / "test_meta.json"))):
        evaluate(root, tmp_path, "test")
    with pytest.raises(InputError, match="valid, test"):
        evaluate(root, tmp_path, "train")
    (root / "Annotations" / "v").rename(root / "Annotations" / "w")
    with pytest.raises(DatasetError, match=re.escape(str(root / "Annotations" / "v"))):
        evaluate(root, tmp_path)


def test_only_scored_frames_are_read_and_missing_gt_is_a_dataset_error(tmp_path):
    root = _tiny_root(tmp_path / "lvos", {"1": _range(0, 15, 4)})
    pred = tmp_path / "pred" / "v"
    for k in (1, 2):  # frames 0 and 15 are the object's first and last: never read
        _write_png(pred / f"{5 * k:08d}.png", np.asarray(Image.open(root / "Annotations" / "v" / f"{5 * k:08d}.png")))
    result = evaluate(root, tmp_path / "pred")
    assert [o.frames for o in result.objects()] == [["00000005", "00000010"]]
    assert result.global_["J-seen-Mean"] == 1.0 and math.isnan(result.global_["J-Mean"])
    (root / "Annotations" / "v" / "00000010.png").unlink()
    with pytest.raises(DatasetError, match=re.escape(str(root / "Annotations" / "v" / "00000010.png"))):
        evaluate(root, tmp_path / "pred")


def test_workers_progress_and_outputs(tmp_path, capsys):
    case = REPO_CASES / "perturbed"
    _spec, gt_root = _load_case(case)
    one = evaluate(gt_root, case / "pred", progress=True)
    assert "LVOS valid" in capsys.readouterr().err
    two = evaluate(gt_root, case / "pred", workers=3)
    for a, b in zip(one.objects(), two.objects()):
        assert a.row == b.row and np.array_equal(a.J, b.J) and np.array_equal(a.F, b.F)
    paths = write_outputs(two, tmp_path / "new" / "out")
    assert [p.name for p in paths] == ["global_results-valid.csv", "per-sequence_results-valid.csv"]
    table = format_table(one)
    assert table.splitlines()[0] == "--------------------------- Global results for valid ---------------------------"
    assert "kite-surf_3" in table and "0.772" in table
    with pytest.raises(InputError):
        evaluate(gt_root, case / "pred", workers=0)
    with pytest.raises(EvaluationError, match=re.escape(str(tmp_path / "nope"))):
        evaluate(gt_root, tmp_path / "nope")


def test_eval_modules_do_not_import_torch():
    code = "import sys, vos.eval.lvos, vos.datasets.lvos; sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, env=env)
    assert done.returncode == 0
