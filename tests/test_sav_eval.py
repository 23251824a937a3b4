"""SA-V val/test evaluation: conformance with the official ``sav_evaluator.py`` outputs, rejections, layout reader.

Conformance cases: every case folder of ``tests/data/sav_eval/cases`` and of every directory listed in
``VOS_SAV_EVAL_FIXTURES`` (``os.pathsep``-separated, each laid out like ``tests/data/sav_eval/cases``: one folder per
case with ``gt/``, ``pred/``, ``case.json`` and ``expected/`` as written by ``tests/data/sav_eval/make_cases.py``).
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

from vos.datasets.sav import SavDataset
from vos.errors import DatasetError, EvaluationError, InputError
from vos.eval.sav import evaluate, format_table, results_csv, write_outputs

REPO = Path(__file__).resolve().parents[1]
REPO_CASES = Path(__file__).resolve().parent / "data" / "sav_eval" / "cases"
TOL = 1e-9
ERRORS = {"EvaluationError": EvaluationError, "DatasetError": DatasetError}


# ----------------------------------------------------------------------------------------------------------------
# Conformance cases


def _check_values(result, expected: dict) -> None:
    """Every unrounded official value: global, per object, per frame (and which frames count), in official order."""
    assert result.J == pytest.approx(expected["global"]["J"], abs=TOL)
    assert result.F == pytest.approx(expected["global"]["F"], abs=TOL)
    assert result.JF == pytest.approx(expected["global"]["J&F"], abs=TOL)
    assert [v.name for v in result.videos] == list(expected["videos"])
    for video in result.videos:
        want = expected["videos"][video.name]
        assert [o.id for o in video.objects] == list(want), video.name
        for obj in video.objects:
            w = want[obj.id]
            where = f"{video.name}/{obj.id}"
            assert obj.frames == w["frames"], where
            np.testing.assert_allclose(obj.J, w["J_frames"], rtol=0, atol=TOL, err_msg=where)
            np.testing.assert_allclose(obj.F, w["F_frames"], rtol=0, atol=TOL, err_msg=where)
            assert obj.J_mean == pytest.approx(w["J"], abs=TOL), where
            assert obj.F_mean == pytest.approx(w["F"], abs=TOL), where


def _evaluate_and_write(gt: Path, pred: Path, out: Path, **kwargs) -> list[Path]:
    return write_outputs(evaluate(gt, pred, **kwargs), out)


@pytest.mark.parametrize("case", evaluator_cases(REPO_CASES, "VOS_SAV_EVAL_FIXTURES"))
def test_conformance_case(case: Path, tmp_path: Path):
    assert case.is_dir(), f"fixture directory {case} does not exist"
    spec = json.loads((case / "case.json").read_text())
    expected = case / "expected"
    gt, pred = case / "gt", case / "pred"
    if spec.get("empty_videos"):             # git keeps no empty folder: the case lists them (in gt/ and pred/)
        gt, pred = tmp_path / "gt", tmp_path / "pred"
        for source, copy in ((case / "gt", gt), (case / "pred", pred)):
            shutil.copytree(source, copy)
            for name in spec["empty_videos"]:
                (copy / name).mkdir(exist_ok=True)
    videos = [p for p in gt.iterdir() if p.is_dir()]
    workers = 2 if len(videos) > 1 else 1
    out = tmp_path / "out"
    if spec["vos"] == "ok":
        assert spec["official"]["returncode"] == 0 and spec["official"]["wrote_results_csv"]
        result = evaluate(gt, pred, workers=workers)
        written = write_outputs(result, out)
        assert [p.name for p in written] == ["results.csv"] and sorted(os.listdir(out)) == ["results.csv"]
        assert written[0].read_bytes() == (expected / "results.csv").read_bytes()
        _check_values(result, json.loads((expected / "values.json").read_text()))
        assert format_table(result) in (expected / "stdout.txt").read_text()  # the official printout
        return
    official = spec.get("official_strict", spec["official"])
    assert official["returncode"] != 0 and not official["wrote_results_csv"], official  # the official tool rejects
    with pytest.raises(ERRORS[spec["vos"]]) as err:
        _evaluate_and_write(case / "gt", case / "pred", out, workers=workers)
    message = str(err.value)
    assert "\n" not in message
    for part in spec["names"]:
        assert part in message, (part, message)
    assert not out.exists()


def test_repo_fixtures_cover_every_case():
    cases = sorted(p for p in REPO_CASES.iterdir() if p.is_dir())
    assert len(cases) >= 10
    for case in cases:
        spec = json.loads((case / "case.json").read_text())
        files = set(os.listdir(case / "expected"))
        assert {"stdout.txt", "stderr.txt"} <= files, case.name
        if spec["vos"] == "ok":
            assert {"results.csv", "values.json"} <= files, case.name


def test_missing_video_official_non_strict_numbers_on_the_listed_videos(tmp_path: Path):
    """Without --strict the official tool scores only the predicted videos; vos does the same given that list."""
    case = REPO_CASES / "reject_missing_video"
    listed = tmp_path / "predicted.txt"
    listed.write_text("sav_a\n")
    written = _evaluate_and_write(case / "gt", case / "pred", tmp_path / "out", set=str(listed))
    assert written[0].read_bytes() == (case / "expected" / "results.csv").read_bytes()


def test_workers_do_not_change_results():
    case = REPO_CASES / "main"
    one, two = evaluate(case / "gt", case / "pred"), evaluate(case / "gt", case / "pred", workers=2)
    assert results_csv(one) == results_csv(two)
    assert (one.J, one.F) == (two.J, two.F)


# ----------------------------------------------------------------------------------------------------------------
# Rules on hand-made masks


def _png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, np.uint8) * 255).save(path)


def _square(r0: int, c0: int, size: int = 6, shape=(20, 30)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[r0:r0 + size, c0:c0 + size] = True
    return m


def test_counting_starts_at_first_gt_or_prediction(tmp_path: Path):
    """Frames 1..4 are scored; GT appears at frame 3, the prediction (a false positive) at frame 2."""
    empty = np.zeros((20, 30), bool)
    gt = [_square(5, 5), empty, empty, _square(5, 5), _square(5, 7), _square(5, 5)]
    pred = [empty, empty, _square(10, 20), _square(5, 5), _square(5, 5), empty]
    for k, (g, p) in enumerate(zip(gt, pred)):
        _png(tmp_path / "gt" / "v" / "000" / f"{4 * k:05d}.png", g)
        if 0 < k < 5:
            _png(tmp_path / "pred" / "v" / "000" / f"{4 * k:05d}.png", p)
    obj = evaluate(tmp_path / "gt", tmp_path / "pred").videos[0].objects[0]
    assert obj.frames == ["00008.png", "00012.png", "00016.png"]
    np.testing.assert_allclose(obj.J, [0.0, 1.0, 24 / 48])  # 6x6 squares 2 columns apart: 24 / (36 + 36 - 24)
    assert obj.F[:2].tolist() == [0.0, 1.0]
    assert obj.J_mean == pytest.approx(100 * (0 + 1 + 0.5) / 3, abs=1e-12)


def test_both_empty_after_leaving_count_as_one(tmp_path: Path):
    empty = np.zeros((20, 30), bool)
    gt = [_square(5, 5), _square(5, 5), empty, empty, empty]
    for k, g in enumerate(gt):
        _png(tmp_path / "gt" / "v" / "000" / f"{4 * k:05d}.png", g)
        _png(tmp_path / "pred" / "v" / "000" / f"{4 * k:05d}.png", g)
    obj = evaluate(tmp_path / "gt", tmp_path / "pred").videos[0].objects[0]
    assert obj.frames == ["00004.png", "00008.png", "00012.png"]
    assert obj.J.tolist() == [1.0, 1.0, 1.0] and obj.F.tolist() == [1.0, 1.0, 1.0]


def test_global_pools_objects_across_videos(tmp_path: Path):
    """Global J = mean over objects, not over per-video means: video a has 2 objects, video b one."""
    empty = np.zeros((20, 30), bool)
    for video, objects in (("a", ("000", "001")), ("b", ("000",))):
        for obj in objects:
            for k in range(3):
                g = _square(5, 5)
                _png(tmp_path / "gt" / video / obj / f"{4 * k:05d}.png", g)
                good = video == "a" and obj == "000"
                _png(tmp_path / "pred" / video / obj / f"{4 * k:05d}.png", g if good else empty)
    result = evaluate(tmp_path / "gt", tmp_path / "pred")
    assert result.J == pytest.approx(100 / 3, abs=1e-12)  # per-video means would give (50 + 0) / 2
    assert result.JF == (result.J + result.F) / 2


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def _valid_case(tmp_path: Path) -> tuple[Path, Path]:
    for root in ("gt", "pred"):
        for k in range(4):
            _png(tmp_path / root / "v" / "000" / f"{4 * k:05d}.png", _square(5, 5 + k))
    return tmp_path / "gt", tmp_path / "pred"


def _rejects(error: type, parts: list, gt: Path, pred: Path, out: Path, **kwargs) -> None:
    with pytest.raises(error) as err:
        _evaluate_and_write(gt, pred, out, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, (part, message)
    assert not out.exists()


def test_bad_roots_and_lists(tmp_path: Path):
    gt, pred = _valid_case(tmp_path)
    out = tmp_path / "out"
    _rejects(DatasetError, [tmp_path / "nope"], tmp_path / "nope", pred, out)
    _rejects(EvaluationError, [tmp_path / "nothing"], gt, tmp_path / "nothing", out)
    _rejects(DatasetError, [tmp_path / "sav_val.txt"], gt, pred, out, set="sav_val.txt")  # beside the GT root
    (tmp_path / "sav_val.txt").write_text("v\nw\n")
    _rejects(DatasetError, ["w", tmp_path / "sav_val.txt"], gt, pred, out, set="sav_val.txt")
    (tmp_path / "sav_val.txt").write_text("v\n")
    assert evaluate(gt, pred, set="sav_val.txt").videos[0].name == "v"
    _rejects(InputError, ["workers"], gt, pred, out, workers=0)
    (tmp_path / "empty").mkdir()
    _rejects(DatasetError, [tmp_path / "empty"], tmp_path / "empty", pred, out)


def test_bad_ground_truth_layouts(tmp_path: Path):
    gt, pred = _valid_case(tmp_path)
    out = tmp_path / "out"
    (gt / "v" / "notes.txt").write_text("x")  # a file beside the object folders
    _rejects(DatasetError, [gt / "v" / "notes.txt"], gt, pred, out)
    (gt / "v" / "notes.txt").unlink()
    davis = gt / "d"
    _png(davis / "00000.png", _square(1, 1))  # a DAVIS-style video folder
    _rejects(DatasetError, [davis], gt, pred, out)
    (davis / "00000.png").unlink()
    davis.rmdir()
    labels = np.zeros((20, 30), np.uint8)
    labels[:5, :5], labels[10:, 10:] = 1, 2
    Image.fromarray(labels).save(gt / "v" / "000" / "00004.png")
    _rejects(DatasetError, [gt / "v" / "000" / "00004.png", "more than 2"], gt, pred, out)


def test_bad_predictions(tmp_path: Path):
    gt, pred = _valid_case(tmp_path)
    out = tmp_path / "out"
    frame = pred / "v" / "000" / "00004.png"
    frame.write_bytes(b"not a png")
    _rejects(EvaluationError, [frame], gt, pred, out)
    _png(frame, np.zeros((30, 20), bool))
    _rejects(EvaluationError, [frame, "20x30", "30x20"], gt, pred, out)
    frame.unlink()
    _rejects(EvaluationError, [frame], gt, pred, out)
    (pred / "v" / "000" / "00000.png").unlink()  # first and last frames are not scored: not needed
    (pred / "v" / "000" / "00012.png").unlink()
    _png(frame, _square(5, 6))
    assert evaluate(gt, pred).videos[0].objects[0].J.tolist() == [1.0, 1.0]


# ----------------------------------------------------------------------------------------------------------------
# Layout reader for tracking


def test_long_video_first_annotations(tmp_path: Path):
    dataset = SavDataset(REPO_CASES / "main" / "gt")
    assert dataset.videos == ["sav_000101", "sav_000202", "sav_000303_long_video_name", "sav_000404"]
    moto = dataset.long_video("sav_000202")
    assert moto.frames_dir is None  # no JPEGImages_24fps beside the fixture's ground truth
    assert {k: v.first_frame for k, v in moto.objects.items()} == {"000": "00020", "001": "00000", "002": "00024"}
    assert moto.objects["000"].annotation == REPO_CASES / "main" / "gt" / "sav_000202" / "000" / "00020.png"
    gt, _ = _valid_case(tmp_path)
    (tmp_path / "JPEGImages_24fps" / "v").mkdir(parents=True)
    assert SavDataset(gt).long_video("v").frames_dir == tmp_path / "JPEGImages_24fps" / "v"


def test_eval_modules_do_not_import_torch():
    code = "import sys, vos.eval.sav, vos.datasets.sav; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          check=False)
    assert done.returncode == 0


def test_only_empty_video_folders_rejected(tmp_path: Path):
    """The official tool writes a results.csv of nan here; vos rejects the ground truth."""
    (tmp_path / "gt" / "a").mkdir(parents=True)
    (tmp_path / "pred" / "a").mkdir(parents=True)
    _rejects(DatasetError, ["no object"], tmp_path / "gt", tmp_path / "pred", tmp_path / "out")
