"""The streaming tracker: API behaviour, command-line outputs, resume, bad input. Tiny fixture model, real frames."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conformance import IN_REPO, read_png
from conftest import (APPLE, APPLE_MASK, KITE, KITE_GT, MODEL_ARGS, ROOT, one_error_line, pngs, run_tool,
                      small_kite)
from test_io import faststart_copy, truncated_copy
from vos.errors import InputError, MaskError
from vos.io import load_label_map, read_video, save_palette_png
from vos.trackers import Tracker


@pytest.fixture(scope="module")
def kite():
    return [np.array(f) for f in read_video(KITE)][:4], load_label_map(KITE_GT)


def track(*args) -> None:
    proc = run_tool("track", *args, "--no-progress")
    assert proc.returncode == 0, proc.stderr


def test_fixture_video_through_tracker(tiny_sam):
    """The paper-mode fixture case gives the reference label maps through the Tracker too (both methods)."""
    case = IN_REPO / "cases" / "video_duck_cat"
    frames = [read_png(p) for p in sorted((case / "inputs" / "frames").glob("*.png"))]
    first = read_png(case / "inputs" / "gt_labels" / "00000.png")
    for method, folder in (("persam", "persam_video"), ("persam_f", "persam_video_f")):
        tracker = Tracker(tiny_sam, method=method, reproduce_reference_quirks=(method == "persam"))
        tracker.add_objects(frames[0], first)
        for i, frame in enumerate(frames[1:], start=1):
            result = tracker.step(frame)
            expected = read_png(case / folder / "pred_labels" / f"{i:05d}.png")
            assert result.index == i
            assert (result.label_map != expected).mean() <= 1e-3, (method, i)


def test_ids_are_kept_and_identity_follows_the_object(tiny_sam, kite):
    """Non-contiguous ids give the same segmentation as 1..K, relabelled (same order → same tie-breaking)."""
    frames, first = kite
    relabel = np.zeros(256, np.uint8)
    relabel[[1, 2, 3]] = [3, 77, 200]
    maps = {}
    for name, label in (("plain", first), ("relabelled", relabel[first])):
        tracker = Tracker(tiny_sam, method="persam")
        tracker.add_objects(frames[0], label)
        maps[name] = [tracker.step(f) for f in frames[1:3]]
    assert sorted(maps["relabelled"][0].scores) == [3, 77, 200]
    for plain, other in zip(maps["plain"], maps["relabelled"]):
        assert set(np.unique(other.label_map)) <= {0, 3, 77, 200}
        np.testing.assert_array_equal(relabel[plain.label_map], other.label_map)
        for obj_id, mask in other.masks.items():
            np.testing.assert_array_equal(mask, other.label_map == obj_id)


def test_add_and_remove_objects_mid_video(tiny_sam, kite):
    frames, first = kite
    tracker = Tracker(tiny_sam, method="persam")
    tracker.add_objects(frames[0], np.where(first == 1, 1, 0).astype(np.uint8))
    r1 = tracker.step(frames[1])
    assert list(r1.scores) == [1]
    tracker.add_object(frames[1], 9, first == 2)          # same frame: its embedding is reused, not recomputed
    assert tracker.objects[9].engine.added_at == 1
    r2 = tracker.step(frames[2])
    assert sorted(r2.scores) == [1, 9] and not np.isnan(r2.scores[9])
    tracker.remove_object(1)
    r3 = tracker.step(frames[3])
    assert list(r3.scores) == [9] and 1 not in np.unique(r3.label_map)
    with pytest.raises(MaskError, match="not tracked"):
        tracker.remove_object(1)
    with pytest.raises(MaskError, match="already tracked"):
        tracker.add_object(frames[3], 9, first == 2)


def test_encoder_runs_once_per_frame(tiny_sam, kite):
    frames, first = kite
    calls = []
    hook = tiny_sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        tracker = Tracker(tiny_sam, method="persam")
        tracker.add_objects(frames[0], first)              # 3 objects, one frame
        tracker.step(frames[1])
        tracker.add_object(frames[1], 5, first == 1)       # the frame just tracked: no new encoder pass
        tracker.step(frames[2])
    finally:
        hook.remove()
    assert len(calls) == 3


def test_state_dict_restores_tracking_from_a_label_map(tiny_sam, kite):
    """Resuming needs only the saved per-object state and the previous label map."""
    frames, first = kite
    a = Tracker(tiny_sam, method="persam")
    a.add_objects(frames[0], first)
    state = a.state_dict()
    r1, r2 = a.step(frames[1]), a.step(frames[2])
    b = Tracker(tiny_sam, method="persam")
    b.load_state_dict(state, r1.label_map, index=1)
    again = b.step(frames[2])
    assert again.index == r2.index == 2
    np.testing.assert_array_equal(again.label_map, r2.label_map)
    with pytest.raises(InputError, match="method 'persam'"):
        Tracker(tiny_sam, method="persam_f").load_state_dict(state, r1.label_map)


def test_lost_object_stays_lost_unless_refind(tiny_sam, kite):
    """An object absent from the previous label map: the paper keeps it lost (no NaN, no crash); the refind option
    searches for it again."""
    frames, first = kite
    for refind in (False, True):
        tracker = Tracker(tiny_sam, method="persam_f", refind_lost=refind, fit_iterations=20)
        tracker.add_objects(frames[0], first)
        tracker.objects[2].engine.box = None                      # as if object 2 had vanished in frame 0
        result = tracker.step(frames[1])
        assert np.isnan(result.scores[2]) != refind
        assert all(np.isfinite(v) for k, v in result.scores.items() if k != 2)
        if not refind:
            assert 2 not in np.unique(result.label_map)


def test_absence_threshold_reports_objects_absent(tiny_sam, kite):
    frames, first = kite
    tracker = Tracker(tiny_sam, method="persam", absence_threshold=1e9)
    tracker.add_objects(frames[0], first)
    result = tracker.step(frames[1])
    assert result.present == [] and not result.label_map.any()


def test_bad_tracker_input(tiny_sam, kite):
    frames, first = kite
    with pytest.raises(InputError, match="unknown method"):
        Tracker(tiny_sam, method="sam3")
    with pytest.raises(InputError, match="method 'sam2' runs on SAM 2 models"):
        Tracker(tiny_sam, method="sam2")
    tracker = Tracker(tiny_sam, method="persam")
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


def test_decoder_batching_gives_the_same_tracks(tiny_sam, kite):
    """The GPU default (16 prompts per decoder call) tracks as one prompt per call, up to float32 rounding: logits
    within 1e-4, and a pixel's label differs only where its decision (the margin between the two best of background
    at 0 and each object's logit) is within that rounding."""
    frames, first = kite
    maps = {}
    for batch in (1, 16):
        for method in ("persam", "persam_f"):
            tracker = Tracker(tiny_sam, method=method, decoder_batch=batch, fit_iterations=30)
            tracker.add_objects(frames[0], first)
            maps[batch, method] = [tracker.step(f) for f in frames[1:]]
    for method in ("persam", "persam_f"):
        for a, b in zip(maps[1, method], maps[16, method]):
            assert a.scores == pytest.approx(b.scores, abs=1e-5)
            for obj_id in a.logits:
                np.testing.assert_allclose(a.logits[obj_id], b.logits[obj_id], atol=1e-4)
            differ = a.label_map != b.label_map
            assert differ.mean() < 1e-4
            candidates = np.stack([np.zeros(differ.sum())] + [a.logits[i][differ] for i in sorted(a.logits)])
            top_two = np.sort(candidates, axis=0)[-2:]
            assert np.all(top_two[1] - top_two[0] <= 2e-4)


def test_absence_threshold_blanks_only_the_objects_below_it(tiny_sam, kite):
    frames, first = kite
    plain = Tracker(tiny_sam, method="persam")
    plain.add_objects(frames[0], first)
    result = plain.step(frames[1])
    best = {i: float(result.logits[i].max()) for i in result.logits}
    low, high = sorted(best, key=best.get)[0], sorted(best, key=best.get)[-1]
    threshold = (best[low] + best[high]) / 2
    assert best[low] < threshold < best[high]
    tracker = Tracker(tiny_sam, method="persam", absence_threshold=threshold)
    tracker.add_objects(frames[0], first)
    thresholded = tracker.step(frames[1])
    assert low not in np.unique(thresholded.label_map)
    for obj_id in best:
        if best[obj_id] >= threshold:     # the others keep exactly their pixels (where `low` did not cover them)
            kept = (result.label_map == obj_id)
            np.testing.assert_array_equal(thresholded.label_map[kept] == obj_id, True)
    assert high in thresholded.present


def test_a_refound_object_is_back_in_the_label_map(tiny_sam, kite):
    """With --refind-lost, an object absent from the previous label map is searched without a box and, when found,
    drawn again (and gets its box back for the next frame)."""
    frames, first = kite
    tracker = Tracker(tiny_sam, method="persam", refind_lost=True)
    tracker.add_objects(frames[0], first)
    tracker.objects[1].engine.box = None                   # as if object 1 had vanished in frame 0
    result = tracker.step(frames[1])
    assert np.isfinite(result.scores[1]) and (result.logits[1] > 0).any()
    assert 1 in result.present
    assert tracker.objects[1].engine.box is not None


def test_mp4_and_frame_folder_give_identical_label_maps(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(read_video(APPLE)):
        if i == 3:
            break
        Image.fromarray(frame).save(folder / f"{i:05d}.png")
    for name, video in (("mp4", APPLE), ("folder", folder)):
        track("--video", video, "--mask", APPLE_MASK, "--out", tmp_path / name, "--method", "persam",
              "--max-frames", "3", *MODEL_ARGS)
    a, b = pngs(tmp_path / "mp4"), pngs(tmp_path / "folder")
    assert list(a) == ["00000.png", "00001.png", "00002.png"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert Image.open(tmp_path / "mp4" / "00001.png").mode == "P"


def _kill_after(args, png, timeout=300):
    """Start tools/track.py with ``args``; SIGKILL it once ``png`` exists."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "track.py"), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not png.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("method", ["persam", "persam_f"])
def test_resume_after_a_kill_gives_identical_outputs(tmp_path, method):
    """A SIGKILLed run resumed with --resume gives the PNGs, RLE and overlay frames of an uninterrupted run, for
    both methods (PerSAM-F, the default, restores its fitted weights); without --resume, or with other settings,
    the folder is refused and left as it is. The six frames are played forwards and backwards to 20, so that the
    kill lands part-way however late the test gets to it on a loaded machine (17 frames to track after 00002.png)."""
    frames, mask = small_kite(tmp_path, 6)
    order = [0, 1, 2, 3, 4, 5, 4, 3, 2, 1] * 2
    for i in range(len(order) - 1, 5, -1):
        shutil.copy(frames / f"{order[i]:05d}.jpg", frames / f"{i:05d}.jpg")

    def args(name):
        return ["--video", frames, "--mask", mask, "--out", tmp_path / name, "--overlay", tmp_path / f"{name}.mp4",
                "--rle", tmp_path / f"{name}.jsonl", "--method", method, *MODEL_ARGS]

    track(*args("full"))
    _kill_after(args("killed"), tmp_path / "killed" / "00002.png")
    written = sorted(p.name for p in (tmp_path / "killed").glob("[0-9]*.png"))
    assert 3 <= len(written) < 20, written                        # killed part-way
    before = pngs(tmp_path / "killed")
    one_error_line(run_tool("track", *args("killed")), "--resume")
    other = "persam_f" if method == "persam" else "persam"
    changed = [a if a != method else other for a in args("killed")]
    one_error_line(run_tool("track", *changed, "--resume"), "cannot resume",
                   f'method: "{method}" → "{other}"')
    assert pngs(tmp_path / "killed").keys() == before.keys()
    track(*args("killed"), "--resume")
    full, resumed = pngs(tmp_path / "full"), pngs(tmp_path / "killed")
    assert list(full) == list(resumed) == [f"{i:05d}.png" for i in range(20)]
    for name in full:
        np.testing.assert_array_equal(full[name], resumed[name])
    assert (tmp_path / "full.jsonl").read_text() == (tmp_path / "killed.jsonl").read_text()
    ov_full = [f for f in read_video(tmp_path / "full.mp4")]
    ov_res = [f for f in read_video(tmp_path / "killed.mp4")]
    assert len(ov_full) == len(ov_res) == 20
    assert all(np.array_equal(a, b) for a, b in zip(ov_full, ov_res))
    run = json.loads((tmp_path / "full" / "vos_run.json").read_text())
    assert run["method"] == method and run["model"] == "tiny" and run["kind"] == "track"
    assert run["weights"].startswith("sha256:") and run["checkpoint"].endswith("tiny_sam_public.pt")
    if method == "persam_f":
        state = torch.load(tmp_path / "killed" / "vos_state.pt", weights_only=True)
        assert all(o["engine"]["weights"] is not None for o in state["objects"].values())


def test_cli_bad_input_is_one_clear_line(tmp_path):
    out = tmp_path / "out"

    def fails(*args):
        return run_tool("track", *args, "--out", out, *MODEL_ARGS)

    one_error_line(fails("--video", tmp_path / "nope.mp4", "--mask", APPLE_MASK), "nope.mp4", "no such")
    (tmp_path / "clip.xyz").write_bytes(b"abc")
    one_error_line(fails("--video", tmp_path / "clip.xyz", "--mask", APPLE_MASK), "unsupported")
    one_error_line(fails("--video", KITE, "--mask", APPLE_MASK), "apple_first_frame_mask.png", "--resize-mask")
    empty = tmp_path / "empty.png"
    save_palette_png(empty, np.zeros((480, 854), np.uint8))
    one_error_line(fails("--video", KITE, "--mask", empty), "empty.png", "no object")
    big = tmp_path / "ids16.png"
    Image.fromarray(np.where(load_label_map(KITE_GT) > 0, 300, 0).astype(np.uint16)).save(big)
    one_error_line(fails("--video", KITE, "--mask", big), "ids16.png", "300")
    single = tmp_path / "single"
    single.mkdir()
    Image.open(sorted(KITE.glob("*.jpg"))[0]).save(single / "00000.jpg")
    one_error_line(fails("--video", single, "--mask", KITE_GT), "single frame")
    one_error_line(run_tool("track", "--video", KITE, "--mask", KITE_GT, "--out", out, "--model", "vit_q"),
                   "unknown model name")
    one_error_line(fails("--video", KITE, "--mask", KITE_GT, "--max-frames", "0"), "--max-frames must be at least 1")
    one_error_line(fails("--video", KITE, "--mask", KITE_GT, "--overlay", tmp_path / "o.avi"), ".mp4")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("someone else's run")
    one_error_line(run_tool("track", "--video", KITE, "--mask", KITE_GT, "--out", tmp_path / "taken", *MODEL_ARGS),
                   "--overwrite")
    assert (tmp_path / "taken" / "notes.txt").exists()
    assert not out.exists()                               # no failed run left an (empty) output folder


def test_truncated_video_keeps_frames_before_the_damage(tmp_path):
    """A video that breaks mid-stream: the frames before the damage are written, the error names the frame and
    every partial output it leaves."""
    src, broken = tmp_path / "faststart.mp4", tmp_path / "broken.mp4"
    faststart_copy(APPLE, src)
    truncated_copy(src, broken, 0.12)
    proc = run_tool("track", "--video", broken, "--mask", APPLE_MASK, "--out", tmp_path / "out", "--method",
                    "persam", "--overlay", tmp_path / "o.mp4", "--rle", tmp_path / "o.jsonl", *MODEL_ARGS)
    error = one_error_line(proc, "broken.mp4", "frame", "o.mp4.part", "o.jsonl", "--resume")
    written = sorted((tmp_path / "out").glob("[0-9]*.png"))
    frame = int(error.split("frame ")[1].split()[0].strip(":,"))
    assert len(written) == frame >= 2
    (tmp_path / "o.mp4.part").rename(tmp_path / "partial.mp4")
    assert len(list(read_video(tmp_path / "partial.mp4"))) == frame          # playable
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == frame
