"""The streaming tracker: API behaviour, CLI outputs, resume, bad input. Tiny fixture model, real frames."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conformance import IN_REPO, load_fixture_sam, read_png
from test_io import faststart_copy, truncated_copy
from vos.errors import InputError, MaskError
from vos.io import load_label_map, read_video, save_palette_png
from vos.trackers import Tracker

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
DEMO = Path(__file__).resolve().parents[1] / "demo"
WEIGHTS = IN_REPO / "weights" / "tiny_sam_public.pt"
KITE = DATA / "davis_frames" / "JPEGImages" / "480p" / "kite-surf"
KITE_GT = DATA / "davis_frames" / "Annotations" / "480p" / "kite-surf" / "00000.png"
APPLE = DEMO / "apple.mp4"
APPLE_MASK = DEMO / "apple_first_frame_mask.png"
MODEL_ARGS = ["--model", "tiny", "--checkpoint", str(WEIGHTS), "--encoder", "stock", "--device", "cpu"]


@pytest.fixture(scope="module")
def sam():
    return load_fixture_sam(IN_REPO)


@pytest.fixture(scope="module")
def kite():
    return [np.array(f) for f in read_video(KITE)][:4], load_label_map(KITE_GT)


def track_cli(*args, check=True, env=None):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "track.py"), *args], capture_output=True, text=True,
                          env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def pngs(folder: Path):
    return {p.name: np.array(Image.open(p)) for p in sorted(folder.glob("[0-9]*.png"))}


def test_fixture_video_through_tracker(sam):
    """The paper-mode fixture case gives the reference label maps through the Tracker too (both methods)."""
    case = IN_REPO / "cases" / "video_duck_cat"
    frames = [read_png(p) for p in sorted((case / "inputs" / "frames").glob("*.png"))]
    first = read_png(case / "inputs" / "gt_labels" / "00000.png")
    for method, folder in (("persam", "persam_video"), ("persam_f", "persam_video_f")):
        tracker = Tracker(sam, method=method, reproduce_reference_quirks=(method == "persam"))
        tracker.add_objects(frames[0], first)
        for i, frame in enumerate(frames[1:], start=1):
            result = tracker.step(frame)
            expected = read_png(case / folder / "pred_labels" / f"{i:05d}.png")
            assert result.index == i
            assert (result.label_map != expected).mean() <= 1e-3, (method, i)


def test_ids_are_kept_and_identity_follows_the_object(sam, kite):
    """Non-contiguous ids give the same segmentation as 1..K, relabelled (same order → same tie-breaking)."""
    frames, first = kite
    relabel = np.zeros(256, np.uint8)
    relabel[[1, 2, 3]] = [3, 77, 200]
    maps = {}
    for name, label in (("plain", first), ("relabelled", relabel[first])):
        tracker = Tracker(sam, method="persam")
        tracker.add_objects(frames[0], label)
        maps[name] = [tracker.step(f) for f in frames[1:3]]
    assert sorted(maps["relabelled"][0].scores) == [3, 77, 200]
    for plain, other in zip(maps["plain"], maps["relabelled"]):
        assert set(np.unique(other.label_map)) <= {0, 3, 77, 200}
        np.testing.assert_array_equal(relabel[plain.label_map], other.label_map)
        for obj_id, mask in other.masks.items():
            np.testing.assert_array_equal(mask, other.label_map == obj_id)


def test_add_and_remove_objects_mid_video(sam, kite):
    frames, first = kite
    tracker = Tracker(sam, method="persam")
    tracker.add_objects(frames[0], np.where(first == 1, 1, 0).astype(np.uint8))
    r1 = tracker.step(frames[1])
    assert list(r1.scores) == [1]
    tracker.add_object(frames[1], 9, first == 2)          # same frame: its embedding is reused, not recomputed
    assert tracker.objects[9].added_at == 1
    r2 = tracker.step(frames[2])
    assert sorted(r2.scores) == [1, 9] and not np.isnan(r2.scores[9])
    tracker.remove_object(1)
    r3 = tracker.step(frames[3])
    assert list(r3.scores) == [9] and 1 not in np.unique(r3.label_map)
    with pytest.raises(MaskError, match="not tracked"):
        tracker.remove_object(1)
    with pytest.raises(MaskError, match="already tracked"):
        tracker.add_object(frames[3], 9, first == 2)


def test_encoder_runs_once_per_frame(sam, kite):
    frames, first = kite
    calls = []
    hook = sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        tracker = Tracker(sam, method="persam")
        tracker.add_objects(frames[0], first)              # 3 objects, one frame
        tracker.step(frames[1])
        tracker.add_object(frames[1], 5, first == 1)       # the frame just tracked: no new encoder pass
        tracker.step(frames[2])
    finally:
        hook.remove()
    assert len(calls) == 3


def test_state_dict_restores_tracking_from_a_label_map(sam, kite):
    """Resuming needs only the saved per-object state and the previous label map."""
    frames, first = kite
    a = Tracker(sam, method="persam")
    a.add_objects(frames[0], first)
    state = a.state_dict()
    r1, r2 = a.step(frames[1]), a.step(frames[2])
    b = Tracker(sam, method="persam")
    b.load_state_dict(state, r1.label_map, index=1)
    again = b.step(frames[2])
    assert again.index == r2.index == 2
    np.testing.assert_array_equal(again.label_map, r2.label_map)
    with pytest.raises(InputError, match="method 'persam'"):
        Tracker(sam, method="persam_f").load_state_dict(state, r1.label_map)


def test_lost_object_stays_lost_unless_refind(sam, kite):
    """An object absent from the previous label map: the paper keeps it lost (no NaN, no crash); the refind option
    searches for it again."""
    frames, first = kite
    for refind in (False, True):
        tracker = Tracker(sam, method="persam_f", refind_lost=refind, fit_iterations=20)
        tracker.add_objects(frames[0], first)
        tracker.objects[2].box = None                      # as if object 2 had vanished in frame 0
        result = tracker.step(frames[1])
        assert np.isnan(result.scores[2]) != refind
        assert all(np.isfinite(v) for k, v in result.scores.items() if k != 2)
        if not refind:
            assert 2 not in np.unique(result.label_map)


def test_absence_threshold_reports_objects_absent(sam, kite):
    frames, first = kite
    tracker = Tracker(sam, method="persam", absence_threshold=1e9)
    tracker.add_objects(frames[0], first)
    result = tracker.step(frames[1])
    assert result.present == [] and not result.label_map.any()


def test_bad_tracker_input(sam, kite):
    frames, first = kite
    with pytest.raises(InputError, match="unknown method"):
        Tracker(sam, method="sam2")
    tracker = Tracker(sam, method="persam")
    with pytest.raises(InputError, match="no objects"):
        tracker.step(frames[1])
    with pytest.raises(MaskError, match="no object"):
        tracker.add_objects(frames[0], np.zeros_like(first))
    tiny = np.zeros_like(first)
    tiny[100:104, 100:104] = 4
    with pytest.raises(MaskError, match="object 4 is too small"):
        tracker.add_objects(frames[0], tiny)
    with pytest.raises(MaskError, match="frame is 854×480"):
        tracker.add_objects(frames[0], first[:100])


def test_mp4_and_frame_folder_give_identical_label_maps(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(read_video(APPLE)):
        if i == 3:
            break
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    for name, video in (("mp4", APPLE), ("folder", folder)):
        track_cli("--video", str(video), "--mask", str(APPLE_MASK), "--out", str(tmp_path / name), "--method",
                  "persam", "--max-frames", "3", *MODEL_ARGS)
    a, b = pngs(tmp_path / "mp4"), pngs(tmp_path / "folder")
    assert list(a) == ["00000.png", "00001.png", "00002.png"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert Image.open(tmp_path / "mp4" / "00001.png").mode == "P"


def test_resume_after_a_kill_gives_identical_outputs(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(sorted(KITE.glob("*.jpg"))[:5]):
        Image.open(f).resize((427, 240)).save(frames / f"{i:05d}.jpg", quality=95)
    mask = tmp_path / "mask.png"
    save_palette_png(mask, np.array(Image.fromarray(load_label_map(KITE_GT)).resize((427, 240), Image.NEAREST)))

    def args(name):
        return ["--video", str(frames), "--mask", str(mask), "--out", str(tmp_path / name), "--overlay",
                str(tmp_path / f"{name}.mp4"), "--rle", str(tmp_path / f"{name}.jsonl"), "--method", "persam",
                *MODEL_ARGS]

    track_cli(*args("full"))
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "track.py"), *args("killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "00002.png").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = sorted(p.name for p in (tmp_path / "killed").glob("[0-9]*.png"))
    assert 3 <= len(written) < 5, written                         # killed part-way
    refused = track_cli(*args("killed"), check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    track_cli(*args("killed"), "--resume")
    full, resumed = pngs(tmp_path / "full"), pngs(tmp_path / "killed")
    assert list(full) == list(resumed) == [f"{i:05d}.png" for i in range(5)]
    for name in full:
        np.testing.assert_array_equal(full[name], resumed[name])
    assert (tmp_path / "full.jsonl").read_text() == (tmp_path / "killed.jsonl").read_text()
    ov_full = [f for f in read_video(tmp_path / "full.mp4")]
    ov_res = [f for f in read_video(tmp_path / "killed.mp4")]
    assert len(ov_full) == len(ov_res) == 5
    assert all(np.array_equal(a, b) for a, b in zip(ov_full, ov_res))
    run = json.loads((tmp_path / "full" / "vos_run.json").read_text())
    assert run["method"] == "persam" and run["model"] == "tiny"


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr     # progress-bar lines may precede it
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_cli_bad_input_is_one_clear_line(tmp_path):
    out = str(tmp_path / "out")
    _one_line_error(track_cli("--video", str(tmp_path / "nope.mp4"), "--mask", str(APPLE_MASK), "--out", out,
                              *MODEL_ARGS, check=False), "nope.mp4", "no such")
    (tmp_path / "clip.xyz").write_bytes(b"abc")
    _one_line_error(track_cli("--video", str(tmp_path / "clip.xyz"), "--mask", str(APPLE_MASK), "--out", out,
                              *MODEL_ARGS, check=False), "unsupported")
    _one_line_error(track_cli("--video", str(KITE), "--mask", str(APPLE_MASK), "--out", out, *MODEL_ARGS,
                              check=False), "apple_first_frame_mask.png", "--resize-mask")
    empty = tmp_path / "empty.png"
    save_palette_png(empty, np.zeros((480, 854), np.uint8))
    _one_line_error(track_cli("--video", str(KITE), "--mask", str(empty), "--out", out, *MODEL_ARGS, check=False),
                    "empty.png", "no object")
    big = tmp_path / "ids16.png"
    Image.fromarray(np.where(load_label_map(KITE_GT) > 0, 300, 0).astype(np.uint16)).save(big)
    _one_line_error(track_cli("--video", str(KITE), "--mask", str(big), "--out", out, *MODEL_ARGS, check=False),
                    "ids16.png", "300")
    single = tmp_path / "single"
    single.mkdir()
    Image.open(sorted(KITE.glob("*.jpg"))[0]).save(single / "00000.jpg")
    _one_line_error(track_cli("--video", str(single), "--mask", str(KITE_GT), "--out", out, *MODEL_ARGS,
                              check=False), "single frame")
    _one_line_error(track_cli("--video", str(KITE), "--mask", str(KITE_GT), "--out", out, "--model", "vit_q",
                              check=False), "unknown model name")
    os.makedirs(tmp_path / "taken")
    (tmp_path / "taken" / "notes.txt").write_text("someone else's run")
    _one_line_error(track_cli("--video", str(KITE), "--mask", str(KITE_GT), "--out", str(tmp_path / "taken"),
                              *MODEL_ARGS, check=False), "--overwrite")
    assert (tmp_path / "taken" / "notes.txt").exists()


def test_truncated_video_keeps_frames_before_the_damage(tmp_path):
    """A video that breaks mid-stream: the frames before the damage are written, the error names the frame."""
    src, broken = tmp_path / "faststart.mp4", tmp_path / "broken.mp4"
    faststart_copy(APPLE, src)
    truncated_copy(src, broken, 0.12)
    proc = track_cli("--video", str(broken), "--mask", str(APPLE_MASK), "--out", str(tmp_path / "out"), "--method",
                     "persam", *MODEL_ARGS, check=False)
    _one_line_error(proc, "broken.mp4", "frame")
    written = sorted((tmp_path / "out").glob("[0-9]*.png"))
    frame = int(proc.stderr.split("frame ")[1].split()[0].strip(":,"))
    assert len(written) == frame >= 2


def test_eval_davis_run_mode_tracks_then_evaluates_and_resumes(tmp_path):
    """``tools/eval_davis.py --run``: palette PNGs per sequence, both CSVs, the recorded configuration; a second
    invocation reuses the complete sequence instead of tracking it again."""
    import shutil

    root = tmp_path / "davis"
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(DATA / "davis_frames" / kind / "480p" / "kite-surf", root / kind / "480p" / "kite-surf")
    for jpg in sorted((root / "JPEGImages" / "480p" / "kite-surf").glob("*.jpg"))[4:]:
        jpg.unlink()
        (root / "Annotations" / "480p" / "kite-surf" / f"{jpg.stem}.png").unlink()
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("kite-surf\n")
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "tools" / "eval_davis.py"), "--run", "--davis-root", str(root), "--out",
           str(out), "--method", "persam", "--no-progress", *MODEL_ARGS]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (out / "kite-surf").glob("[0-9]*.png")) == [f"{i:05d}.png" for i in range(4)]
    assert (out / "global_results-val.csv").read_text().startswith("J&F-Mean,J-Mean,J-Recall")
    assert (out / "per-sequence_results-val.csv").read_text().splitlines()[1:] and \
        [line.split(",")[0] for line in (out / "per-sequence_results-val.csv").read_text().splitlines()[1:]] == \
        ["kite-surf_1", "kite-surf_2", "kite-surf_3"]
    config = json.loads((out / "vos_config.json").read_text())
    assert config["sequences"] == ["kite-surf"] and "--method persam" in config["command"]
    stamp = (out / "kite-surf" / "00003.png").stat().st_mtime_ns
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert (out / "kite-surf" / "00003.png").stat().st_mtime_ns == stamp
