"""Finding objects from reference photos (``vos track --ref-image/--ref-mask``, ``Tracker.add_reference``): the
thresholds decide the frame an object is found on, a found object shows PerSAM's mask, forced losses cycle at the
documented frames for both model families, a resumed run continues the states exactly, memory stays flat, and bad
reference input is one error line with nothing written. Seeded random weights (the tiny fixture SAM and the SAM 2.1
test model): these tests decide the mechanism, not the quality (tests/test_real_weights.py does that)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import MODEL_ARGS, one_error_line, pngs, run_tool
from test_tracker import _kill_after
from vos.io import load_label_map, save_palette_png
from vos.persam import PerSAM
from vos.trackers import Tracker

pytestmark = pytest.mark.filterwarnings("ignore:(?s).*Skipping the post-processing step")

SAM2 = Path(__file__).parent / "data" / "sam2"
SIZE = (320, 180)                   # (W, H) of the test videos
SAM2_ARGS = ["--model", "sam2.1_hiera_tiny_256", "--random-weights", "--device", "cpu"]


def _frame(i: int) -> np.ndarray:
    return np.array(Image.open(SAM2 / "JPEGImages" / "480p" / "kite-surf" / f"{i:05d}.jpg").convert("RGB")
                    .resize(SIZE))


def _labels(i: int) -> np.ndarray:
    return np.array(Image.open(SAM2 / "Annotations" / "480p" / "kite-surf" / f"{i:05d}.png").resize(SIZE,
                                                                                                     Image.NEAREST))


@pytest.fixture
def clip(tmp_path) -> Dict[str, Path]:
    """Kite-surf frames 0..11 at 320×180 as a JPEG folder, and a reference: frame 5 at another size (400×225) with
    its kite (object 1) and surfer (object 3) as objects 1 and 2."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(12):
        Image.fromarray(_frame(i)).save(frames / f"{i:05d}.jpg", quality=95)
    photo, mask = tmp_path / "photo.png", tmp_path / "photo_mask.png"
    big = Image.open(SAM2 / "JPEGImages" / "480p" / "kite-surf" / "00005.jpg").convert("RGB").resize((400, 225))
    big.save(photo)
    labels = np.array(Image.open(SAM2 / "Annotations" / "480p" / "kite-surf" / "00005.png").resize((400, 225),
                                                                                                  Image.NEAREST))
    save_palette_png(mask, np.select([labels == 1, labels == 3], [1, 2], 0).astype(np.uint8))
    return {"frames": frames, "photo": photo, "mask": mask}


def _find(clip, out: Path, *extra, model=MODEL_ARGS):
    ran = run_tool("track", "--video", clip["frames"], "--ref-image", clip["photo"], "--ref-mask", clip["mask"],
                   "--out", out, "--no-progress", *model, *extra)
    assert ran.returncode == 0, ran.stderr
    return ran


def _states(out: Path) -> List[dict]:
    lines = (out / "vos_states.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["frame"] for r in records] == list(range(len(records)))
    return [r["objects"] for r in records]


def _found_on(states: List[dict], obj_id: str) -> List[int]:
    return [t for t, s in enumerate(states) if s[obj_id]["found"]]


def test_the_threshold_decides_the_frame_an_object_is_found_on(clip, tmp_path):
    never = tmp_path / "never"
    ran = _find(clip, never, "--method", "persam", "--detect-threshold", "1.01")
    states = _states(never)
    assert len(states) == 12 and all(sorted(s) == ["1", "2"] for s in states)
    assert all(o["state"] == "searching" and not o["found"] and 0 <= o["score"] <= 1 for s in states
               for o in s.values())
    assert all(not p.any() for p in pngs(never).values()) and len(pngs(never)) == 12
    assert "found" not in ran.stdout

    always = tmp_path / "always"
    _find(clip, always, "--method", "persam", "--detect-threshold", "0")
    states0 = _states(always)
    assert _found_on(states0, "1") == _found_on(states0, "2") == [0]
    assert all(o["state"] == "tracking" and o["score"] is None for s in states0[1:] for o in s.values())
    first = pngs(always)["00000.png"]
    assert (first == 1).any() and (first == 2).any()

    scores = [s["1"]["score"] for s in states]
    threshold = max(scores) - 1e-9
    expected = next(t for t, score in enumerate(scores) if score >= threshold)
    late = tmp_path / "late"
    ran = _find(clip, late, "--method", "persam", "--detect-threshold", repr(threshold))
    states_late = _states(late)
    assert _found_on(states_late, "1") == [expected]
    assert [s["1"]["score"] for s in states_late[:expected + 1]] == scores[:expected + 1]
    assert all(s["1"]["state"] == "searching" for s in states_late[:expected])
    assert all(s["1"]["state"] == "tracking" for s in states_late[expected:])
    assert (pngs(late)[f"{expected:05d}.png"] == 1).any()
    assert not any((p == 1).any() for name, p in pngs(late).items() if int(name[:5]) < expected)
    assert f"object 1: found on frame {expected}" in ran.stdout
    recorded = json.loads((late / "vos_run.json").read_text())["objects"]
    assert recorded["1"] == [{"found": expected}]


def test_a_found_object_shows_persams_mask_for_the_frame(tiny_sam):
    """The reference is a frame of the video at another size; found on that frame (threshold 0), its mask there is
    what training-free PerSAM segments with that reference (reference cells pooled with R = 215)."""
    frame, labels = _frame(5), _labels(5)
    photo = np.array(Image.fromarray(frame).resize((400, 225)))
    photo_mask = np.array(Image.fromarray((labels == 1).astype(np.uint8)).resize((400, 225), Image.NEAREST)) > 0
    tracker = Tracker(tiny_sam, method="persam", detect_threshold=0.0)
    tracker.add_reference(1, photo, photo_mask)
    result = tracker.step(frame)
    assert result.states[1].found and result.states[1].state == "tracking"
    want = PerSAM(tiny_sam).set_reference(photo, photo_mask, mask_value=215).segment(frame)
    assert want.mask.any()
    np.testing.assert_array_equal(result.label_map == 1, want.mask)
    assert result.states[1].score == pytest.approx(min(max(want.peak, 0), 1) * min(max(want.score, 0), 1))


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_forced_losses_find_the_object_again_every_n_plus_1_frames(clip, tmp_path, family):
    """An absence threshold above every logit, detect threshold 0, --lost-after 2: found on frames 0, 3, 6, 9; the
    frames in between are tracked (reported absent: no pixel), and the summary lists every loss and find."""
    out = tmp_path / family
    model = MODEL_ARGS + ["--method", "persam"] if family == "sam" else SAM2_ARGS
    ran = _find(clip, out, "--detect-threshold", "0", "--absence-threshold", "1e9", "--lost-after", "2",
                model=model)
    states = _states(out)
    for obj_id in ("1", "2"):
        assert _found_on(states, obj_id) == [0, 3, 6, 9]
        assert all(s[obj_id]["state"] == "tracking" for s in states)
    images = pngs(out)
    for t in range(12):
        assert images[f"{t:05d}.png"].any() == (t % 3 == 0), t
    assert "object 1: found on frame 0, lost on 3, found again on 3, lost again on 6" in ran.stdout
    recorded = json.loads((out / "vos_run.json").read_text())["objects"]
    assert recorded["2"] == [{"found": 0}, {"lost": 3}, {"found": 3}, {"lost": 6}, {"found": 6}, {"lost": 9},
                             {"found": 9}]


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_the_verify_threshold_loses_objects_whose_references_no_longer_match(clip, tmp_path, family):
    """--verify-threshold above every possible similarity peak (2): each tracked frame counts as absent although it
    has pixels, so the objects are lost after --lost-after 2 and found again (detect threshold 0) on 0, 3, 6, 9; a
    threshold below every peak (-2) never loses them."""
    model = MODEL_ARGS + ["--method", "persam"] if family == "sam" else SAM2_ARGS
    for verify, found_on in (("2", [0, 3, 6, 9]), ("-2", [0])):
        out = tmp_path / f"{family}{verify}"
        _find(clip, out, "--detect-threshold", "0", "--verify-threshold", verify, "--lost-after", "2", model=model)
        states = _states(out)
        assert _found_on(states, "1") == found_on
        assert json.loads((out / "vos_run.json").read_text())["verify_threshold"] == float(verify)


def test_a_resumed_run_continues_the_states_exactly(clip, tmp_path):
    def run_args(name):
        return ["--video", clip["frames"], "--ref-image", clip["photo"], "--ref-mask", clip["mask"], "--method",
                "persam", "--detect-threshold", "0", "--absence-threshold", "1e9", "--lost-after", "2",
                "--overlay", tmp_path / f"{name}.mp4", "--out", tmp_path / name, *MODEL_ARGS]

    assert run_tool("track", *run_args("full")).returncode == 0
    _kill_after(run_args("killed"), tmp_path / "killed" / "00004.png")
    assert 5 <= len(pngs(tmp_path / "killed")) < 12
    assert run_tool("track", *run_args("killed"), "--resume").returncode == 0
    full, resumed = pngs(tmp_path / "full"), pngs(tmp_path / "killed")
    assert list(full) == list(resumed)
    for name in full:
        np.testing.assert_array_equal(full[name], resumed[name])
    states = [(tmp_path / n / "vos_states.jsonl").read_text() for n in ("full", "killed")]
    assert states[0] == states[1]
    objects = [json.loads((tmp_path / n / "vos_run.json").read_text())["objects"] for n in ("full", "killed")]
    assert objects[0] == objects[1]
    from vos.io import read_video

    assert all(np.array_equal(a, b) for a, b in zip(read_video(tmp_path / "full.mp4"),
                                                    read_video(tmp_path / "killed.mp4")))


def _tensor_bytes(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    children = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else []
    return sum(_tensor_bytes(c) for c in children)


def test_memory_stays_flat_while_objects_are_lost_and_found_again():
    """SAM 2.1 test model, forced loss every 3 frames over 150 frames: the tracker state (every object's memory
    window and references) is the same size at the same phase of each cycle."""
    from vos.models import load_model

    model = load_model("sam2.1_hiera_tiny_256", random_weights=True, device="cpu")
    tracker = Tracker(model, detect_threshold=0.0, absence_threshold=1e9, lost_after=2)
    tracker.add_reference(1, _frame(5), _labels(5) == 1)
    frames = [_frame(i) for i in range(12)]
    pingpong = [*range(12), *range(10, 0, -1)]
    sizes = []
    for t in range(150):
        result = tracker.step(frames[pingpong[t % len(pingpong)]])
        assert result.states[1].found == (t % 3 == 0)
        sizes.append(_tensor_bytes(tracker.state_dict()))
    assert len({sizes[t] for t in range(3, 150, 3)}) == 1 and len({sizes[t] for t in range(4, 150, 3)}) == 1
    assert max(sizes) < 2 * 1024 ** 2


def test_bad_reference_input_is_one_error_line_and_nothing_is_written(clip, tmp_path):
    photo, mask = clip["photo"], clip["mask"]
    small = tmp_path / "small_mask.png"
    save_palette_png(small, load_label_map(mask)[:100, :200])
    empty = tmp_path / "empty_mask.png"
    save_palette_png(empty, np.zeros((225, 400), np.uint8))
    wide = tmp_path / "ids16.png"
    Image.fromarray(np.where(load_label_map(mask) == 1, 300, 0).astype(np.uint16)).save(wide)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    out = tmp_path / "out"
    cases = [(["--ref-image", photo, "--ref-mask", small], [str(small), "400x225"]),
             (["--ref-image", photo, "--ref-mask", empty], [str(empty), "no object"]),
             (["--ref-image", photo], ["1 --ref-image but 0 --ref-mask"]),
             (["--ref-image", photo, "--ref-mask", wide], [str(wide), "300"]),
             (["--ref-image", broken, "--ref-mask", mask], [str(broken), "cannot read"]),
             (["--ref-image", tmp_path / "missing.jpg", "--ref-mask", mask], ["missing.jpg", "does not exist"])]
    for extra, needles in cases:
        ran = run_tool("track", "--video", clip["frames"], *extra, "--out", out, *MODEL_ARGS)
        one_error_line(ran, *needles)
        assert not out.exists()
    one_error_line(run_tool("track", "--video", clip["frames"], "--redetect", "--out", out, *MODEL_ARGS),
                   "--redetect")
    assert not out.exists()
