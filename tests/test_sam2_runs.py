"""SAM 2.1 through the run layer and the command line: resume after a kill gives the uninterrupted outputs (the
bounded state is saved with every frame), ``eval_davis --run`` with a SAM 2 model, prompts with SAM 2's decoder,
options that do not apply. The model: hiera-tiny at a 256-pixel input with seeded random weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import one_error_line, pngs, run_tool
from test_tracker import _kill_after
from vos.io import read_video

from vos.models.sam2 import load_sam2

DATA = Path(__file__).parent / "data" / "sam2"
FRAMES = DATA / "JPEGImages" / "480p" / "kite-surf"
MASK = DATA / "Annotations" / "480p" / "kite-surf" / "00000.png"
SAM2 = ["--model", "sam2.1_hiera_tiny_256", "--random-weights", "--device", "cpu"]


def test_resume_after_a_kill_gives_identical_outputs(tmp_path):
    def args(name):
        return ["--video", FRAMES, "--mask", MASK, "--out", tmp_path / name, "--overlay", tmp_path / f"{name}.mp4",
                "--rle", tmp_path / f"{name}.jsonl", "--max-frames", "12", *SAM2]

    assert run_tool("track", *args("full"), "--no-progress").returncode == 0
    _kill_after(args("killed"), tmp_path / "killed" / "00005.png")
    assert 6 <= len(pngs(tmp_path / "killed")) < 12
    state = torch.load(tmp_path / "killed" / "vos_state.pt", weights_only=True)
    assert state["method"] == "sam2" and state["index"] >= 4
    assert run_tool("track", *args("killed"), "--resume", "--no-progress").returncode == 0
    full, resumed = pngs(tmp_path / "full"), pngs(tmp_path / "killed")
    assert list(full) == list(resumed) == [f"{i:05d}.png" for i in range(12)]
    for name in full:
        np.testing.assert_array_equal(full[name], resumed[name])
    assert (tmp_path / "full.jsonl").read_text() == (tmp_path / "killed.jsonl").read_text()
    a, b = list(read_video(tmp_path / "full.mp4")), list(read_video(tmp_path / "killed.mp4"))
    assert len(a) == len(b) == 12 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(full[f"{i:05d}.png"].any() for i in range(1, 12))          # SAM 2 does draw objects


def test_eval_davis_run_with_a_sam2_model(tmp_path):
    import shutil

    root = tmp_path / "davis"
    for kind in ("JPEGImages", "Annotations"):
        src = DATA / kind / "480p" / "kite-surf"
        (root / kind / "480p" / "kite-surf").mkdir(parents=True)
        for f in sorted(src.iterdir())[:5]:
            shutil.copy(f, root / kind / "480p" / "kite-surf" / f.name)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("kite-surf\n")
    proc = run_tool("eval_davis", "--run", "--davis-root", root, "--out", tmp_path / "run", "--no-progress", *SAM2)
    assert proc.returncode == 0, proc.stderr
    assert len(pngs(tmp_path / "run" / "kite-surf")) == 5
    assert (tmp_path / "run" / "global_results-val.csv").read_text().startswith("J&F-Mean")


def test_prompts_with_sam2s_decoder_and_options_that_do_not_apply(tmp_path):
    from vos.prompts import ObjectPrompt, masks_from_prompts

    proc = run_tool("track", "--video", FRAMES, "--point", "200,120", "--max-frames", "2", "--out", tmp_path / "p",
                    "--no-progress", *SAM2)
    assert proc.returncode == 0, proc.stderr
    model = load_sam2("sam2.1_hiera_tiny_256", random_weights=True, device="cpu")
    frame = np.array(Image.open(FRAMES / "00000.jpg").convert("RGB"))
    expected = masks_from_prompts(model, frame, [ObjectPrompt(1, ((200, 120, 1),))])
    np.testing.assert_array_equal(pngs(tmp_path / "p")["00000.png"], expected)
    base = ["--video", FRAMES, "--mask", MASK, "--out", tmp_path / "o", *SAM2]
    one_error_line(run_tool("track", *base, "--method", "persam"), "method 'persam' runs on SAM-family models",
                   "sam2.1_hiera_tiny_256")
    one_error_line(run_tool("track", *base, "--refind-lost"), "refind_lost",
                   "apply to the PerSAM methods")
    assert not (tmp_path / "o").exists()
