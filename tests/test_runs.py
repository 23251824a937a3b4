"""The run layer and its output folders: nothing already written is lost, every check before any write, one clear
line for each failure; options reach the tracker from every entry point; the console script."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import (DATA, KITE, KITE_GT, MODEL_ARGS, ROOT, WEIGHTS, one_error_line, pngs, run_tool, small_kite,
                      tool_process)
from vos.cli import eval_davis as eval_davis_cli
from vos.cli import track as track_cli
from vos.io import read_video
from vos.runs import ModelOptions, StopControl, TrackRun, track
from vos.trackers import Tracker, TrackerOptions

TINY = ModelOptions("tiny", str(WEIGHTS), "cpu", "stock")


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A tmpfs at ``path`` (``options``: e.g. ``ro`` or ``size=300k``), unmounted afterwards (tests run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def clip(tmp_path):
    return small_kite(tmp_path / "in", 4)


def test_overwrite_with_a_bad_checkpoint_keeps_the_old_run_byte_for_byte(tmp_path, clip):
    frames, mask = clip
    out = tmp_path / "run"
    assert run_tool("track", "--video", frames, "--mask", mask, "--out", out, "--method", "persam", "--overlay",
                    tmp_path / "o.mp4", "--rle", tmp_path / "o.jsonl", *MODEL_ARGS).returncode == 0
    before = snapshot(out), (tmp_path / "o.mp4").read_bytes(), (tmp_path / "o.jsonl").read_bytes()
    bad = MODEL_ARGS[:3] + [str(tmp_path / "typo.pth")] + MODEL_ARGS[4:]
    one_error_line(run_tool("track", "--video", frames, "--mask", mask, "--out", out, "--method", "persam",
                            "--overlay", tmp_path / "o.mp4", "--rle", tmp_path / "o.jsonl", "--overwrite", *bad),
                   "typo.pth", "does not exist")
    assert (snapshot(out), (tmp_path / "o.mp4").read_bytes(), (tmp_path / "o.jsonl").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "o.jsonl", "o.mp4", "run"]   # nothing set aside
    # a good overwrite replaces the run (the method changes, so do the settings)
    assert run_tool("track", "--video", frames, "--mask", mask, "--out", out, "--overwrite", "--method", "persam_f",
                    *MODEL_ARGS).returncode == 0
    assert json.loads((out / "vos_run.json").read_text())["method"] == "persam_f"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "o.jsonl", "o.mp4", "run"]


def test_read_only_output_folder_fails_before_the_model_is_loaded(tmp_path, clip):
    frames, mask = clip
    with mounted_tmpfs(tmp_path / "ro", "ro") as ro:
        args = ["--video", frames, "--mask", mask, "--model", "tiny", "--checkpoint", tmp_path / "missing.pth"]
        one_error_line(run_tool("track", *args, "--out", ro / "run"), str(ro), "Read-only file system")
        one_error_line(run_tool("track", *args, "--out", ro), str(ro), "Read-only file system")
        one_error_line(run_tool("track", *args, "--out", tmp_path / "w", "--rle", ro / "x.jsonl"), "--rle",
                       "Read-only file system")
    assert not (tmp_path / "w").exists()


def test_out_naming_a_file_and_an_overlay_naming_a_folder(tmp_path, clip):
    frames, mask = clip
    (tmp_path / "file").write_text("not a folder")
    one_error_line(run_tool("track", "--video", frames, "--mask", mask, "--out", tmp_path / "file", *MODEL_ARGS),
                   "file", "is a file, not a folder")
    (tmp_path / "dir.mp4").mkdir()
    one_error_line(run_tool("track", "--video", frames, "--mask", mask, "--out", tmp_path / "o", "--overlay",
                            tmp_path / "dir.mp4", *MODEL_ARGS), "dir.mp4 is a folder")
    assert (tmp_path / "file").read_text() == "not a folder" and not (tmp_path / "o").exists()


#: A command prefix that runs as root without the capabilities that let root ignore file permissions: the process
#: cannot enter another user's 0700 folder, like any user, yet still reads the root-owned checkout and virtualenv
#: wherever they are (CI's virtualenv is in a 0700 temporary folder, which user nobody could not read).
WITHOUT_FILE_ACCESS = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                       "--bounding-set=-dac_override,-dac_read_search"]


def test_paths_under_a_folder_the_user_cannot_enter_are_one_error_line(tmp_path, clip):
    """The output folder, the video, the checkpoint and the overlay under another user's 0700 folder: exit 2 and one
    line naming the path and the folder that cannot be entered, before anything is written."""
    frames, mask = clip
    locked = tmp_path / "locked"
    shutil.copytree(frames, locked / "frames")
    shutil.copy(WEIGHTS, locked / "tiny.pt")
    os.chown(locked, 65534, 65534)
    locked.chmod(0o700)
    video, out = ["--video", frames, "--mask", mask], ["--out", tmp_path / "o"]
    checkpoint = MODEL_ARGS[:3] + [str(locked / "tiny.pt")] + MODEL_ARGS[4:]
    cases = {locked / "run": [*video, "--out", locked / "run", *MODEL_ARGS],
             locked / "frames": ["--video", locked / "frames", "--mask", mask, *out, *MODEL_ARGS],
             locked / "tiny.pt": [*video, *out, *checkpoint],
             locked / "o.mp4": [*video, *out, "--overlay", locked / "o.mp4", *MODEL_ARGS]}
    for path, args in cases.items():
        proc = subprocess.run([*WITHOUT_FILE_ACCESS, sys.executable, str(ROOT / "tools" / "track.py"),
                               *map(str, args)], capture_output=True, text=True, check=False)
        one_error_line(proc, f"{path}: permission denied: cannot enter the folder {locked}")
    assert not (tmp_path / "o").exists()


def test_a_full_disk_is_one_error_line_and_keeps_the_complete_frames(tmp_path):
    frames, mask = small_kite(tmp_path / "in", 20, size=(854, 480))
    with mounted_tmpfs(tmp_path / "small", "size=120k") as small:
        proc = run_tool("track", "--video", frames, "--mask", mask, "--out", small / "run", "--method", "persam",
                        *MODEL_ARGS)
        line = one_error_line(proc, "No space left on device", "--resume")
        done = len(list((small / "run").glob("[0-9]*.png")))
        assert 1 <= done < 20 and f"frames 0-{done - 1} are complete" in line
        assert not [p for p in (small / "run").iterdir() if p.name.endswith(".tmp")]    # no half-written file


def test_outputs_get_the_usual_permissions(tmp_path, clip):
    """Files are 0o666 minus the umask (here 022 → 0o644), not the 0600 of a temporary file."""
    frames, mask = clip
    root = tmp_path / "davis"
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(DATA / "davis_frames" / kind / "480p" / "kite-surf", root / kind / "480p" / "kite-surf")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("kite-surf\n")
    umask = lambda: os.umask(0o022)  # noqa: E731
    proc = tool_process("track", "--video", frames, "--mask", mask, "--out", tmp_path / "run", "--method", "persam",
                        "--overlay", tmp_path / "o.mp4", "--rle", tmp_path / "o.jsonl", *MODEL_ARGS,
                        preexec_fn=umask)
    assert proc.returncode == 0, proc.stderr
    proc = tool_process("eval_davis", "--davis-root", root, "--results", root / "Annotations" / "480p", "--out",
                        tmp_path / "csv", "--no-progress", preexec_fn=umask)
    assert proc.returncode == 0, proc.stderr
    files = [*(tmp_path / "run").iterdir(), tmp_path / "o.mp4", tmp_path / "o.jsonl", *(tmp_path / "csv").iterdir()]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert {"vos_run.json", "vos_state.pt", "00000.png", "global_results-val.csv"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


def test_resume_accepts_the_same_checkpoint_by_another_path_and_names_what_changed(tmp_path, clip):
    frames, mask = clip
    out = tmp_path / "run"
    args = ["--video", frames, "--mask", mask, "--out", out, "--method", "persam", "--model", "tiny", "--encoder",
            "stock", "--device", "cpu"]
    assert run_tool("track", *args, "--checkpoint", WEIGHTS, "--max-frames", "2").returncode == 0
    (tmp_path / "link.pt").symlink_to(WEIGHTS)
    shutil.copy(WEIGHTS, tmp_path / "copy.pt")
    assert run_tool("track", *args, "--checkpoint", tmp_path / "link.pt", "--max-frames", "3",
                    "--resume").returncode == 0
    assert run_tool("track", *args, "--checkpoint", tmp_path / "copy.pt", "--resume").returncode == 0
    assert len(pngs(out)) == 4
    other = tmp_path / "other.pt"
    import torch
    state = torch.load(WEIGHTS, weights_only=True)
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"] + 1
    torch.save(state, other)
    one_error_line(run_tool("track", *args, "--checkpoint", other, "--resume", "--absence-threshold", "2"),
                   "cannot resume", 'weights: "sha256:', "absence_threshold: null → 2.0")


def test_two_processes_fetch_one_checkpoint_into_a_cold_cache(tmp_path):
    """Both downloads succeed, the cache holds exactly the file, no temporary file is left behind."""
    import hashlib

    payload = WEIGHTS.read_bytes()
    script = f"""
import sys
from dataclasses import replace
from vos.models.checkpoint import resolve_checkpoint
from vos.models.registry import MODELS
spec = replace(MODELS["tiny"], filename="tiny.pth", url={WEIGHTS.as_uri()!r},
               sha256={hashlib.sha256(payload).hexdigest()!r})
print(resolve_checkpoint(spec))
"""
    env = {**os.environ, "VOS_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o[0].strip() for o in outs} == {str(tmp_path / "cache" / "tiny.pth")}
    assert (tmp_path / "cache" / "tiny.pth").read_bytes() == payload
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tiny.pth", "tiny.pth.verified"]


def test_persam_segment_on_two_threads_sharing_one_model_is_exact(tiny_sam):
    """Each thread with its own reference gives exactly the sequential results (the stage-1 guidance never touches
    the shared decoder); repeated to catch an interleaving."""
    from conformance import IN_REPO, read_png
    from vos.persam import PerSAM

    cases = [IN_REPO / "cases" / name / "inputs" for name in ("image_cat", "image_duck_toy")]
    inputs = [(read_png(c / "ref_image.png"), read_png(c / "ref_mask.png"), read_png(c / "test_image.png"))
              for c in cases]
    engines = [PerSAM(tiny_sam).set_reference(ref, mask) for ref, mask, _ in inputs]
    expected = [e.segment(test) for e, (_, _, test) in zip(engines, inputs)]
    for _ in range(6):
        results, errors = [None, None], []

        def work(i):
            try:
                for _ in range(3):
                    results[i] = engines[i].segment(inputs[i][2])
                    np.testing.assert_array_equal(results[i].logits, expected[i].logits)
            except BaseException as err:          # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    assert expected[0].mask.shape != expected[1].mask.shape          # two different images and references


ALL_TRACKER_OPTIONS = ["--method", "persam", "--decoder-batch", "3", "--absence-threshold", "0.5", "--refind-lost",
                       "--reproduce-reference-quirks"]
EXPECTED = TrackerOptions(method="persam", decoder_batch=3, absence_threshold=0.5, refind_lost=True,
                          reproduce_reference_quirks=True)


def test_every_tracker_option_of_the_command_line_reaches_the_tracker(tiny_sam, tmp_path):
    args = track_cli.build_parser().parse_args(["--video", "v", "--mask", "m", "--out", "o", *ALL_TRACKER_OPTIONS,
                                                *MODEL_ARGS])
    run = track_cli.track_run(args)
    assert run.tracker == EXPECTED and run.model == TINY
    args = eval_davis_cli.build_parser().parse_args(["--davis-root", "d", "--run", "--out", "o",
                                                     *ALL_TRACKER_OPTIONS, *MODEL_ARGS])
    from vos.batch import BatchRun, Job
    batch = BatchRun(Path("o"), tracker=eval_davis_cli.tracker_options(args), model=eval_davis_cli.model_options(args))
    assert batch.job_run(Job("s", "v", "m")).tracker == EXPECTED
    engine = Tracker(tiny_sam, options=EXPECTED).engine
    assert (engine.config.method, engine.decoder_batch, engine.absence_threshold, engine.refind_lost,
            engine.config.reproduce_reference_quirks) == ("persam", 3, 0.5, True, True)


def test_eval_davis_run_forwards_tracker_options_evaluates_and_resumes(tmp_path):
    """``eval_davis --run``: palette PNGs per sequence through the batch runner, both CSVs, the settings; the
    absence threshold and refind option reach the tracker (an impossible threshold leaves frames 1.. empty); a
    second invocation does no tracking."""
    root = tmp_path / "davis"
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(DATA / "davis_frames" / kind / "480p" / "kite-surf", root / kind / "480p" / "kite-surf")
    for jpg in sorted((root / "JPEGImages" / "480p" / "kite-surf").glob("*.jpg"))[4:]:
        jpg.unlink()
        (root / "Annotations" / "480p" / "kite-surf" / f"{jpg.stem}.png").unlink()
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("kite-surf\n")
    out = tmp_path / "run"
    cmd = ["--run", "--davis-root", root, "--out", out, "--method", "persam", "--absence-threshold", "1e9",
           "--refind-lost", "--no-progress", *MODEL_ARGS]
    first = run_tool("eval_davis", *cmd)
    assert first.returncode == 0, first.stderr
    maps = pngs(out / "kite-surf")
    assert list(maps) == [f"{i:05d}.png" for i in range(4)]
    assert maps["00000.png"].any() and not any(maps[f"{i:05d}.png"].any() for i in (1, 2, 3))
    assert (out / "global_results-val.csv").read_text().startswith("J&F-Mean,J-Mean,J-Recall")
    assert [line.split(",")[0] for line in (out / "per-sequence_results-val.csv").read_text().splitlines()[1:]] == \
        ["kite-surf_1", "kite-surf_2", "kite-surf_3"]
    seq_run = json.loads((out / "kite-surf" / "vos_run.json").read_text())
    assert seq_run["absence_threshold"] == 1e9 and seq_run["refind_lost"] is True
    assert json.loads((out / "vos_run.json").read_text())["kind"] == "batch"
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["videos"][0]["status"] == "done" and summary["videos"][0]["frames"] == 4
    stamp = (out / "kite-surf" / "00003.png").stat().st_mtime_ns
    second = run_tool("eval_davis", *cmd)
    assert second.returncode == 0, second.stderr
    assert (out / "kite-surf" / "00003.png").stat().st_mtime_ns == stamp
    assert json.loads((out / "batch_summary.json").read_text())["videos"][0]["status"] == "skipped"
    one_error_line(run_tool("eval_davis", *[c if c != "1e9" else "5" for c in cmd]), "holds another run",
                   "absence_threshold: 1000000000.0 → 5.0")


def test_the_library_run_reports_progress_and_stops_cleanly(tmp_path, clip, tiny_sam):
    """``vos.runs.track`` with a progress callback and a stop request after frame 1: every output complete up to
    the last frame, the overlay finalised with as many frames as PNGs."""
    frames, mask = clip
    stop, seen = StopControl(), []

    def on_frame(event):
        seen.append((event.index, event.total, event.result is not None))
        if event.index == 1:
            stop.request("stopped by the test")

    run = TrackRun(str(frames), str(mask), tmp_path / "run", overlay=tmp_path / "o.mp4", rle=tmp_path / "o.jsonl",
                   tracker=TrackerOptions(method="persam"), model=TINY)
    summary = track(run, model=tiny_sam, on_frame=on_frame, stop=stop)
    assert seen == [(0, 4, True), (1, 4, True)]
    assert (summary.frames, summary.written, summary.stopped, summary.complete) == (2, 2, "stopped by the test",
                                                                                     False)
    assert len(pngs(tmp_path / "run")) == 2 and len(list(read_video(tmp_path / "o.mp4"))) == 2
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2
    resumed = track(replace(run, resume=True), model=tiny_sam)
    assert (resumed.frames, resumed.resumed_from, resumed.complete) == (4, 2, True)


def test_the_console_script_and_help_list_every_model(tmp_path):
    vos = Path(sys.executable).with_name("vos")
    assert vos.is_file(), "the vos console script is not installed (pip install -e .)"
    usage = subprocess.run([str(vos)], capture_output=True, text=True)
    assert usage.returncode == 2 and "track" in usage.stdout and "eval-davis" in usage.stdout
    helptext = subprocess.run([str(vos), "track", "--help"], capture_output=True, text=True)
    assert helptext.returncode == 0 and helptext.stdout.startswith("usage: vos track")
    from vos.models.registry import MODELS
    flat = " ".join(helptext.stdout.split())
    assert all(name in flat for name in MODELS), [n for n in MODELS if n not in flat]
    proc = subprocess.run([str(vos), "track", "--video", str(KITE), "--mask", str(KITE_GT), "--out",
                           str(tmp_path / "o"), "--model", "nope"], capture_output=True, text=True)
    one_error_line(proc, "unknown model name 'nope'")


def test_vos_version_prints_the_installed_version(tmp_path):
    import importlib.metadata

    proc = subprocess.run([str(Path(sys.executable).with_name("vos")), "--version"], capture_output=True, text=True,
                          check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"vos {importlib.metadata.version('vos')}\n", "")
    # not installed (no site-packages, no metadata beside the copy): the version of the checkout's pyproject.toml
    shutil.copytree(ROOT / "vos", tmp_path / "vos", ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = '[build-system]\nrequires = ["x"]\n\n[project]\nname = "vos"\nversion = "9.8.7"\n\n[x]\nversion = "1"\n'
    (tmp_path / "pyproject.toml").write_text(pyproject)
    script = "import sys; from vos.cli.main import main; sys.exit(main(['--version']))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)
    assert (proc.returncode, proc.stdout) == (0, "vos 9.8.7\n"), proc.stderr


def test_track_arguments_give_back_the_same_run_for_every_option():
    """The app's resume command line comes from vos.cli.track.track_arguments: parsing its output gives the same
    TrackRun, whatever options differ from the defaults (a new option the inverse does not know fails here)."""
    from vos.cli.track import build_parser, track_arguments, track_run
    from vos.io.live import LiveOptions
    from vos.prompts import ObjectPrompt
    from vos.runs.options import ObjectEntry, ReferencePhoto

    plain = TrackRun("v.mp4", "m.png", Path("out"))
    every = TrackRun(
        "rtsp://127.0.0.1:8554/x", None, Path("out"), overlay=Path("o.mp4"), rle=Path("r.jsonl"), max_frames=7,
        resume=True, resize_mask=True, mask_threshold=128, video_backend="opencv",
        tracker=TrackerOptions(method="persam", absence_threshold=0.5, decoder_batch=4, refind_lost=True,
                               reproduce_reference_quirks=True, detect_threshold=0.6, lost_after=3, confirm_frames=2,
                               verify_threshold=None),
        model=ModelOptions("minisam", "ck.pt", "cpu", "stock", True, "bf16"),
        prompts=(ObjectPrompt(1, ((10.5, 20.0, 1), (3.0, 4.0, 0))), ObjectPrompt(3, (), (1.0, 2.0, 30.0, 40.0))),
        references=(ReferencePhoto("a.jpg", "a.png"),), redetect=True, realtime=True, duration=3.5,
        live=LiveOptions(open_timeout=2.0, read_timeout=3.0, attempts=1, rtsp_transport="udp"))
    for run in (plain, every, replace(every, resume=False, overwrite=True, tracker=TrackerOptions(method="sam2"))):
        assert track_run(build_parser().parse_args(track_arguments(run))) == run
    assert track_arguments(plain) == ["--video", "v.mp4", "--out", "out", "--mask", "m.png"]
    with pytest.raises(Exception, match="entering"):
        track_arguments(replace(plain, entries=(ObjectEntry(3, "m.png"),)))


def test_known_first_frame_features_are_not_encoded_again_and_change_nothing(tmp_path, clip, tiny_sam):
    """The app encodes the first frame when a source opens and hands those features to the run (known=): the image
    encoder then runs once per later frame only, and the outputs are the bytes of a run without them."""
    from vos.models.backend import backend_for

    frames, mask = clip
    calls = []
    hook = tiny_sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        plain = track(TrackRun(str(frames), str(mask), tmp_path / "plain", model=TINY), model=tiny_sam)
        encoded_plain = len(calls)
        first = next(iter(read_video(str(frames))))
        features = backend_for(tiny_sam).encode(first)
        calls.clear()
        known = track(TrackRun(str(frames), str(mask), tmp_path / "known", model=TINY), model=tiny_sam,
                      known=(first, features))
    finally:
        hook.remove()
    assert plain.frames == known.frames == 4
    assert encoded_plain == 4 and len(calls) == 3
    assert snapshot(tmp_path / "plain").keys() == snapshot(tmp_path / "known").keys()
    a, b = pngs(tmp_path / "plain"), pngs(tmp_path / "known")
    assert all(np.array_equal(a[k], b[k]) for k in a)
