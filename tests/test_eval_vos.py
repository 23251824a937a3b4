"""``vos eval-vos``: the command line over the LVOS, SA-V and MOSEv2 evaluators (their conformance with the official
tools is in test_lvos_eval.py, test_sav_eval.py, test_mosev2_eval.py), and ``--run``: each benchmark tracked as its
protocol says (objects added on their own first annotated frame, SA-V's per-object masks), then scored."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, MODEL_ARGS, one_error_line, pngs, run_tool, small_kite
from vos.io import load_label_map, save_palette_png

pytestmark = pytest.mark.timeout(900)


def case(benchmark: str, name: str) -> tuple[Path, Path, dict]:
    folder = DATA / f"{benchmark}_eval" / "cases" / name
    spec = json.loads((folder / "case.json").read_text())
    gt = (folder / spec["gt_root"]).resolve() if "gt_root" in spec else folder / "gt"
    return folder, gt, spec


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}


@pytest.mark.parametrize("benchmark,name,outputs", [
    ("lvos", "perturbed", ["global_results-valid.csv", "per-sequence_results-valid.csv"]),
    ("sav", "main", ["results.csv"]),
])
def test_the_command_line_writes_the_official_files(tmp_path, benchmark, name, outputs):
    folder, gt, spec = case(benchmark, name)
    args = ["--set", spec["set"]] if "set" in spec else []
    ran = run_tool("eval-vos", "--benchmark", benchmark, "--gt-root", gt, "--results", folder / "pred", "--out",
                   tmp_path / "out", "--no-progress", *args)
    assert ran.returncode == 0, ran.stderr
    assert sorted(files(tmp_path / "out")) == sorted(outputs)
    for output in outputs:
        assert (tmp_path / "out" / output).read_bytes() == (folder / "expected" / output).read_bytes(), output
        assert f"wrote {tmp_path / 'out' / output}" in ran.stdout


def test_the_command_line_writes_mosev2_scores(tmp_path):
    """scores.txt as the official tool writes it; metrics.json with the official per-object numbers (its order is the
    file system's listing order, its total_time the run's own)."""
    folder, gt, _ = case("mosev2", "main_fp_late_redetect")
    ran = run_tool("eval-vos", "--benchmark", "mosev2", "--gt-root", gt, "--results", folder / "pred", "--out",
                   tmp_path / "out", "--no-progress")
    assert ran.returncode == 0, ran.stderr
    assert sorted(files(tmp_path / "out")) == ["metrics.json", "scores.txt"]
    assert (tmp_path / "out" / "scores.txt").read_bytes() == (folder / "expected" / "scores.txt").read_bytes()
    expected = json.loads((folder / "expected" / "metrics.json").read_text())
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected.pop("total_time"), got.pop("total_time")
    assert got == expected and "100.0" not in (tmp_path / "out" / "scores.txt").read_text().split("\n")[0]


@pytest.mark.parametrize("benchmark,name,needle", [
    ("lvos", "missing_frame", ".png"), ("sav", "reject_missing_video", "sav_"), ("mosev2", "reject_missing_meta",
                                                                                  "meta.json")])
def test_a_rejected_prediction_set_is_one_error_line_and_writes_nothing(tmp_path, benchmark, name, needle):
    folder, gt, spec = case(benchmark, name)
    args = ["--set", spec["set"]] if "set" in spec else []
    ran = run_tool("eval-vos", "--benchmark", benchmark, "--gt-root", gt, "--results", folder / "pred", "--out",
                   tmp_path / "out", "--no-progress", *args)
    one_error_line(ran, needle)
    assert files(tmp_path / "out") == {}


def test_usage_errors(capsys):
    from vos.cli.eval_vos import main

    for args, needle in ((["--results", "p", "--run"], "not both"), ([], "give --results"),
                         (["--results", "p", "--frames", "f"], "--frames is for --run"),
                         (["--results", "p", "--engine", "ray"], "give --run")):
        with pytest.raises(SystemExit) as exit_:
            main(["--benchmark", "lvos", "--gt-root", "g", "--out", "o", *args])
        assert exit_.value.code == 2 and needle in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# --run on small real layouts (6 kite-surf frames at 427×240; object 1 on frame 0, objects 2 and 3 later)


@pytest.fixture
def kite(tmp_path):
    frames, mask = small_kite(tmp_path / "kite", 6)
    return sorted(frames.iterdir()), load_label_map(mask)


def test_lvos_run_adds_an_object_on_its_first_annotated_frame(tmp_path, kite):
    jpgs, labels = kite
    root = tmp_path / "lvos"
    (root / "JPEGImages" / "vid").mkdir(parents=True)
    (root / "Annotations" / "vid").mkdir(parents=True)
    for i in range(11):                      # the 6 frames, then the first 5 again
        (root / "JPEGImages" / "vid" / f"{i:08d}.jpg").write_bytes(jpgs[i % 6].read_bytes())
    # LVOS annotates every 5th frame: 0 (object 1 only), 5 and 10 (objects 1 and 2)
    save_palette_png(root / "Annotations" / "vid" / "00000000.png", np.where(labels == 1, 1, 0).astype(np.uint8))
    for name in ("00000005.png", "00000010.png"):
        save_palette_png(root / "Annotations" / "vid" / name, np.where(labels <= 2, labels, 0).astype(np.uint8))
    meta = {"videos": {"vid": {"objects": {"1": {"frame_range": {"start": 0, "end": 10, "frame_nums": 3}},
                                           "2": {"frame_range": {"start": 5, "end": 10, "frame_nums": 2}}}}}}
    (root / "valid_meta.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    ran = run_tool("eval-vos", "--benchmark", "lvos", "--gt-root", root, "--run", "--out", out, "--no-progress",
                   *MODEL_ARGS)
    assert ran.returncode == 0, ran.stderr
    run = pngs(out / "runs" / "vid")
    assert len(run) == 11
    assert all(2 not in np.unique(run[f"{i:05d}.png"]) for i in range(5))
    assert np.array_equal(run["00005.png"] == 2, labels == 2)
    results = sorted(p.name for p in (out / "results" / "vid").iterdir())
    assert results == [f"{i:08d}.png" for i in range(11)]
    assert (out / "results" / "vid" / "00000005.png").read_bytes() == (out / "runs" / "vid" / "00005.png").read_bytes()
    assert (out / "global_results-valid.csv").is_file() and (out / "per-sequence_results-valid.csv").is_file()
    again = run_tool("eval-vos", "--benchmark", "lvos", "--gt-root", root, "--results", out / "results", "--out",
                     tmp_path / "again", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert files(tmp_path / "again") == {k: v for k, v in files(out).items() if k.endswith(".csv")}


def test_sav_run_keeps_each_objects_own_mask_in_the_per_object_layout(tmp_path, kite):
    """SA-V: 24 fps frames tracked, annotations every 4th frame; object 001 is empty on 00000 and enters on 00004;
    the two objects overlap (001 contains 000), which the per-object PNGs keep."""
    jpgs, labels = kite
    split = tmp_path / "sav_val"
    frames, gt = split / "JPEGImages_24fps" / "sv", split / "Annotations_6fps" / "sv"
    frames.mkdir(parents=True)
    for i in range(9):                       # the 6 frames, then the first 3 again
        (frames / f"{i:05d}.jpg").write_bytes(jpgs[i % 6].read_bytes())
    person, both = labels == 1, (labels == 1) | (labels == 2)
    for obj, masks in (("000", {0: person, 4: person, 8: person}),
                       ("001", {0: np.zeros_like(person), 4: both, 8: both})):
        (gt / obj).mkdir(parents=True)
        for index, mask in masks.items():
            Image.fromarray(mask.astype(np.uint8)).save(gt / obj / f"{index:05d}.png")
    out = tmp_path / "out"
    ran = run_tool("eval-vos", "--benchmark", "sav", "--gt-root", split / "Annotations_6fps", "--run", "--out", out,
                   "--no-progress", *MODEL_ARGS)
    assert ran.returncode == 0, ran.stderr
    pred = out / "results" / "sv"
    assert sorted(p.name for p in pred.iterdir()) == ["000", "001"]
    for obj in ("000", "001"):
        assert sorted(p.name for p in (pred / obj).iterdir()) == [f"{i:05d}.png" for i in range(9)]
    own = {i: np.asarray(Image.open(pred / "001" / f"{i:05d}.png")) for i in range(9)}
    assert not any(own[i].any() for i in range(4))          # before it enters
    assert np.array_equal(own[4] > 0, both)                  # its annotation, overlap with 000 included
    assert (np.asarray(Image.open(pred / "000" / "00004.png")) > 0).any()
    assert (out / "results.csv").is_file()


def test_mosev2_run_tracks_every_frame_and_scores_it(tmp_path, kite):
    jpgs, labels = kite
    root = tmp_path / "mose"
    (root / "JPEGImages" / "mv").mkdir(parents=True)
    (root / "Annotations" / "mv").mkdir(parents=True)
    for i, jpg in enumerate(jpgs):
        (root / "JPEGImages" / "mv" / f"{i:05d}.jpg").write_bytes(jpg.read_bytes())
        lm = labels if i == 0 else np.where(labels == 1, 1, 0).astype(np.uint8)
        save_palette_png(root / "Annotations" / "mv" / f"{i:05d}.png", lm)
    objects = {k: {"category": "kite-surf"} for k in "123"}
    meta = {"videos": {"mv": {"length": 6, "height": 240, "width": 427, "objects": objects}}}
    (root / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    ran = run_tool("eval-vos", "--benchmark", "mosev2", "--gt-root", root, "--run", "--out", out, "--no-progress",
                   *MODEL_ARGS)
    assert ran.returncode == 0, ran.stderr
    assert sorted(p.name for p in (out / "results" / "mv").iterdir()) == [f"{i:05d}.png" for i in range(6)]
    assert (out / "scores.txt").is_file() and (out / "metrics.json").is_file()


def test_run_without_frames_is_one_error_line(tmp_path):
    folder, gt, spec = case("lvos", "perfect")
    ran = run_tool("eval-vos", "--benchmark", "lvos", "--gt-root", gt, "--run", "--out", tmp_path / "out",
                   "--set", spec["set"], *MODEL_ARGS)
    one_error_line(ran, "JPEGImages", "frame root not found")
    assert not (tmp_path / "out").exists()
