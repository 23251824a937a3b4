"""Objects that enter on later frames (LVOS, YouTube-VOS, MOSE): each is started from its annotation on its own
frame, in the same pass as the tracked objects; per-object mask PNGs (SA-V's layout); resume across an entry."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from conftest import WEIGHTS, pngs, small_kite
from vos.errors import InputError, MaskError
from vos.io import load_label_map, read_video, save_palette_png
from vos.runs import ModelOptions, TrackRun, track
from vos.runs.options import ObjectEntry
from vos.trackers import Tracker

TINY = ModelOptions("tiny", str(WEIGHTS), "cpu", "stock")


@pytest.fixture
def clip(tmp_path):
    """6 kite-surf frames (427×240) and masks: object 1 alone on frame 0, objects 2 and 3 as a label map, object 3
    alone as a binary mask."""
    frames, mask = small_kite(tmp_path / "in", 6)
    labels = load_label_map(mask)
    paths = {}
    for name, lm in (("first", np.where(labels == 1, 1, 0)), ("late", np.where(labels >= 2, labels, 0)),
                     ("three", (labels == 3).astype(np.uint8))):
        paths[name] = tmp_path / "in" / f"{name}.png"
        save_palette_png(paths[name], lm.astype(np.uint8))
    return frames, paths, labels


def by_hand(tiny_sam, frames, labels, plan):
    """Label maps of a Tracker driven frame by frame: ``plan[index]`` = the masks entering there."""
    tracker = Tracker(tiny_sam)
    maps = []
    for index, frame in enumerate(read_video(frames)):
        entering = plan.get(index, {})
        if not entering and not tracker.object_ids:
            maps.append(np.zeros(frame.shape[:2], np.uint8))
            continue
        maps.append(tracker.step(frame, entering).label_map)
    return maps


def test_objects_enter_on_their_own_frame_in_one_pass(tmp_path, clip, tiny_sam):
    frames, paths, labels = clip
    out = tmp_path / "run"
    run = TrackRun(str(frames), str(paths["first"]), out, model=TINY,
                   entries=(ObjectEntry(2, str(paths["late"])), ObjectEntry(4, str(paths["three"]), obj_id=3)))
    assert track(run).frames == 6
    got = pngs(out)
    for index in (0, 1):
        assert set(np.unique(got[f"{index:05d}.png"])) <= {0, 1}
    # frame 2: objects 2 and 3 of the label map enter and are drawn over object 1 exactly where annotated
    assert np.array_equal(got["00002.png"] == 2, labels == 2)
    assert np.array_equal(got["00002.png"] == 3, labels == 3)
    # object 3 is tracked already on frame 4: its binary entry there is ignored (ids not tracked yet enter)
    expected = by_hand(tiny_sam, frames, labels, {0: {1: labels == 1}, 2: {2: labels == 2, 3: labels == 3}})
    for index, label_map in enumerate(expected):
        assert np.array_equal(got[f"{index:05d}.png"], label_map), index


def test_without_a_first_mask_frames_before_the_first_object_are_empty(tmp_path, clip, tiny_sam):
    frames, paths, labels = clip
    out = tmp_path / "run"
    track(TrackRun(str(frames), None, out, model=TINY, object_pngs=True,
                   entries=(ObjectEntry(3, str(paths["three"]), obj_id=3), ObjectEntry(1, str(paths["first"])))))
    got = pngs(out)
    assert not got["00000.png"].any()
    assert np.array_equal(got["00001.png"], np.where(labels == 1, 1, 0))
    assert np.array_equal(got["00003.png"] == 3, labels == 3)
    expected = by_hand(tiny_sam, frames, labels, {1: {1: labels == 1}, 3: {3: labels == 3}})
    for index, label_map in enumerate(expected):
        assert np.array_equal(got[f"{index:05d}.png"], label_map), index
    # per-object PNGs: 0/1 palette PNGs from each object's first frame on, each the object's own mask
    objects = out / "objects"
    assert sorted(p.name for p in objects.iterdir()) == ["001", "003"]
    assert sorted(p.name for p in (objects / "001").iterdir()) == [f"{i:05d}.png" for i in range(1, 6)]
    assert sorted(p.name for p in (objects / "003").iterdir()) == [f"{i:05d}.png" for i in range(3, 6)]
    for obj_id, folder in ((1, objects / "001"), (3, objects / "003")):
        for png in folder.iterdir():
            image = Image.open(png)
            own = np.asarray(image)
            assert image.mode == "P" and set(np.unique(own)) <= {0, 1}
            merged = got[png.name] == obj_id
            assert not (merged & (own == 0)).any(), png      # the merged label map never gives an object more


def test_resume_after_an_entry_equals_an_uninterrupted_run(tmp_path, clip):
    frames, paths, _ = clip
    entries = (ObjectEntry(2, str(paths["late"])),)
    full, part = tmp_path / "full", tmp_path / "part"
    track(TrackRun(str(frames), str(paths["first"]), full, model=TINY, entries=entries))
    track(TrackRun(str(frames), str(paths["first"]), part, model=TINY, entries=entries, max_frames=4))
    track(TrackRun(str(frames), str(paths["first"]), part, model=TINY, entries=entries, resume=True))
    a, b = pngs(full), pngs(part)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_entries_are_one_line_before_anything_is_written(tmp_path, clip):
    frames, paths, _ = clip
    small = tmp_path / "small.png"
    save_palette_png(small, np.ones((10, 10), np.uint8))
    cases = [
        ((ObjectEntry(0, str(paths["late"])),), InputError, "frame must be ≥ 1"),
        ((ObjectEntry(2, str(small)),), MaskError, "small.png"),
        ((ObjectEntry(2, str(tmp_path / "nope.png")),), InputError, "nope.png"),
        ((ObjectEntry(2, str(paths["three"]), obj_id=300),), InputError, "outside 1..255"),
    ]
    for entries, error, needle in cases:
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        with pytest.raises(error, match=needle):
            track(TrackRun(str(frames), str(paths["first"]), out, model=TINY, entries=entries))
        assert not out.exists()


def test_youtube_vos_objects_enter_on_their_first_annotation_and_the_submission_zip(tmp_path, clip):
    """A YouTube-VOS root (frames every 5th, named by the original index; object 1 annotated on 00000, objects 2 and
    3 first on 00010): the batch adds 2 and 3 on 00010, and the zip holds every frame's PNG under its name."""
    import zipfile

    from conftest import MODEL_ARGS, run_tool

    frames, paths, labels = clip
    video = tmp_path / "yt" / "valid" / "JPEGImages" / "kite"
    annotations = tmp_path / "yt" / "valid" / "Annotations" / "kite"
    video.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for i, f in enumerate(sorted(frames.iterdir())):
        (video / f"{5 * i:05d}.jpg").write_bytes(f.read_bytes())
    (annotations / "00000.png").write_bytes(paths["first"].read_bytes())
    (annotations / "00010.png").write_bytes(paths["late"].read_bytes())
    out, zip_path = tmp_path / "out", tmp_path / "sub.zip"
    ran = run_tool("batch", "--youtube-root", tmp_path / "yt", "--out", out, "--submission", zip_path,
                   "--no-progress", *MODEL_ARGS)
    assert ran.returncode == 0, ran.stderr
    got = pngs(out / "kite")
    assert len(got) == 6
    assert set(np.unique(got["00001.png"])) <= {0, 1}
    assert np.array_equal(got["00002.png"] == 2, labels == 2) and np.array_equal(got["00002.png"] == 3, labels == 3)
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(archive.namelist())
        assert names == [f"Annotations/kite/{5 * i:05d}.png" for i in range(6)]
        for i in range(6):
            assert archive.read(f"Annotations/kite/{5 * i:05d}.png") == (out / "kite" / f"{i:05d}.png").read_bytes()
    one = run_tool("batch", "--csv", tmp_path / "x.csv", "--out", out, "--submission", zip_path, *MODEL_ARGS)
    assert one.returncode == 2 and "--submission is for --youtube-root" in one.stderr
