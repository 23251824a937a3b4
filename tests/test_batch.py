"""Batch tracking on a real local Ray cluster (127.0.0.1, 2 CPUs) with the tiny model and real DAVIS-format
sequences: outputs byte-identical to the local engine, a corrupt video recorded while the others finish, an actor
killed mid-video replaced and its video resumed, a finished set skipped, ``eval_davis --run --engine ray``."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray  # the ray extra is part of ".[all,dev]": a missing package fails here instead of skipping

from conftest import DATA, MODEL_ARGS, ROOT, WEIGHTS, one_error_line, run_tool, tool_process
from vos.batch import BatchRun, davis_jobs
from vos.batch.ray import ACTOR_PREFIX, run_ray
from vos.runs import ModelOptions
from vos.trackers import TrackerOptions

pytestmark = pytest.mark.timeout(240)

#: sequence: frames kept; car-shadow is the longest (the one killed mid-video)
SEQUENCES = {"kite-surf": 4, "blackswan": 4, "car-shadow": 8}
TRACK_ARGS = ["--method", "persam", "--rle", "--no-progress", *MODEL_ARGS]
TINY = ModelOptions("tiny", str(WEIGHTS), "cpu", "stock")
RAY_PARTS = ("raylet", "gcs_server", "default_worker", "ray::", "dashboard", "runtime_env", "log_monitor")


def davis_root(folder: Path, sequences=SEQUENCES, source: Path = DATA / "davis_frames") -> Path:
    """A DAVIS 2017 root with the first frames of ``sequences`` (every frame's JPEG and annotation) of the DAVIS root
    ``source``, val = all."""
    for name, frames in sequences.items():
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            dst = folder / kind / "480p" / name
            dst.mkdir(parents=True)
            for i in range(frames):
                shutil.copy(source / kind / "480p" / name / f"{i:05d}.{ext}", dst)
    (folder / "ImageSets" / "2017").mkdir(parents=True)
    (folder / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{name}\n" for name in sequences))
    return folder


def outputs(out: Path, name: str) -> dict:
    """The frame PNGs and the RLE file of one video, as bytes."""
    files = {p.name: p.read_bytes() for p in sorted((out / name).glob("[0-9]*.png"))}
    files["rle"] = (out / f"{name}.jsonl").read_bytes()
    return files


def summary(out: Path) -> dict:
    return {v["video"]: v for v in json.loads((out / "batch_summary.json").read_text())["videos"]}


def ray_processes() -> dict:
    """``{pid: (ppid, command line)}`` of the Ray processes on this machine."""
    ps = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in ps.splitlines():
        pid, ppid, args = line.split(None, 2) + [""] * (3 - len(line.split(None, 2)))
        if any(part in args for part in RAY_PARTS) and "ps -eo" not in args:
            found[int(pid)] = (int(ppid), args)
    return found


def orphans() -> set:
    """Ray processes whose parent has gone (adopted by init): what a cluster that was not shut down leaves."""
    return {pid for pid, (ppid, _) in ray_processes().items() if ppid == 1}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return davis_root(tmp_path_factory.mktemp("davis"))


@pytest.fixture(scope="module")
def local(root, tmp_path_factory) -> Path:
    """The reference: every sequence through the local engine (torch's default threads: 2 here, as a 1-worker Ray
    actor of these tests reserves both CPUs)."""
    return local_run(root, tmp_path_factory.mktemp("local"), None)


@pytest.fixture(scope="module")
def local_one_thread(root, tmp_path_factory) -> Path:
    """The reference of the 2-worker Ray runs (2 actors on 2 CPUs: 1 torch thread each): kernels after the image
    encoder may round differently at another thread count, which can move a pixel whose logit is within rounding of
    0."""
    return local_run(root, tmp_path_factory.mktemp("local1"), 1)


def local_run(root: Path, out: Path, threads) -> Path:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        ran = run_tool("batch", "--davis-root", root, "--out", out, *TRACK_ARGS)
    finally:
        torch.set_num_threads(before)
    assert ran.returncode == 0, ran.stderr
    return out


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of this test process (2 CPUs, 127.0.0.1); the library uses it instead of starting one.
    Its processes are gone after ``ray.shutdown()``."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="error", log_to_driver=False, object_store_memory=100 * 1024 ** 2)
    before = set(ray_processes())
    yield ray
    ray.shutdown()
    deadline = time.monotonic() + 20
    while set(ray_processes()) & before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(ray_processes()) & before, ray_processes()


def test_a_corrupt_video_is_recorded_the_others_finish_and_the_cli_cluster_is_stopped(root, local_one_thread,
                                                                                          tmp_path):
    """``tools/batch.py --engine ray`` on its own local cluster: a truncated JPEG in blackswan fails that video only
    (frames before it kept), the others are identical to the local engine; exit 2 with one error line naming the
    count and the summary; no Ray process left behind."""
    bad = davis_root(tmp_path / "davis", {name: SEQUENCES[name] for name in ("blackswan", "kite-surf")})
    jpg = bad / "JPEGImages" / "480p" / "blackswan" / "00002.jpg"
    jpg.write_bytes(jpg.read_bytes()[:2000])
    out = tmp_path / "out"
    left_before = orphans()
    proc = tool_process("batch", "--davis-root", bad, "--out", out, "--engine", "ray", "--workers", "2",
                        *TRACK_ARGS, timeout=180)
    one_error_line(proc, "1 of 2 video(s) failed", "blackswan", "00002.jpg", str(out / "batch_summary.csv"))
    fates = summary(out)
    assert fates["kite-surf"]["status"] == "done" and fates["kite-surf"]["frames"] == 4
    assert fates["blackswan"]["status"] == "failed" and fates["blackswan"]["frames"] == 2
    assert "00002.jpg" in fates["blackswan"]["error"]
    assert outputs(out, "kite-surf") == outputs(local_one_thread, "kite-surf")
    deadline = time.monotonic() + 30
    while not orphans() <= left_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert orphans() <= left_before, ray_processes()


def test_ray_outputs_equal_the_local_engine_and_a_finished_set_is_skipped(cluster, root, local_one_thread,
                                                                           tmp_path):
    out = tmp_path / "ray"
    ran = run_tool("batch", "--davis-root", root, "--out", out, "--engine", "ray", "--workers", "2", *TRACK_ARGS)
    assert ran.returncode == 0, ran.stderr
    assert "3 tracked" in ran.stdout
    for name in SEQUENCES:
        assert outputs(out, name) == outputs(local_one_thread, name), name
    assert {v["status"] for v in summary(out).values()} == {"done"}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("[0-9]*.png")}
    again = run_tool("batch", "--davis-root", root, "--out", out, "--engine", "ray", "--workers", "2", *TRACK_ARGS)
    assert again.returncode == 0, again.stderr
    assert "0 tracked, 3 already complete" in again.stdout
    assert {v["status"] for v in summary(out).values()} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("[0-9]*.png")} == stamps
    assert not ray.util.list_named_actors(), "actors left on the cluster"


class Batch(threading.Thread):
    """``run_ray`` in a thread, so that the test can kill its actors meanwhile."""

    def __init__(self, jobs, batch, **options):
        super().__init__()
        self.args, self.options, self.results, self.errors = (jobs, batch), options, [], []
        self.start()

    def run(self) -> None:
        try:
            run_ray(*self.args, on_result=self.results.append, **self.options)
        except BaseException as err:   # re-raised by finish()
            self.errors.append(err)

    def kill_when(self, png: Path, actor: str) -> None:
        """``ray.kill`` the actor named ``actor`` as soon as ``png`` is written (its video is mid-way then)."""
        deadline = time.monotonic() + 120
        while not png.is_file() and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert png.is_file() and not (png.parent / "vos_complete.json").exists()
        assert ray.util.list_named_actors() == [actor]
        ray.kill(ray.get_actor(actor))

    def finish(self) -> list:
        self.join(timeout=150)
        assert not self.is_alive() and not self.errors, self.errors
        assert not ray.util.list_named_actors(), "actors left on the cluster"
        return [(r.video, r.status) for r in self.results]


def tiny_batch(out: Path) -> BatchRun:
    return BatchRun(out, tracker=TrackerOptions(method="persam"), model=TINY, rle=True)


def test_an_actor_killed_mid_video_is_replaced_and_the_video_resumed(cluster, root, local, tmp_path):
    """One actor (so the test knows which one runs car-shadow): once car-shadow's frame 1 is written the test kills
    it with ``ray.kill``; a new actor resumes car-shadow after its last complete frame (frame 0 is not rewritten)
    and goes on with kite-surf; every output is identical to the local engine."""
    out = tmp_path / "ray"
    run = Batch(davis_jobs(root, sequences=["car-shadow", "kite-surf"]), tiny_batch(out), workers=1)
    run.kill_when(out / "car-shadow" / "00001.png", f"{ACTOR_PREFIX}-0")
    first_frame = (out / "car-shadow" / "00000.png").stat().st_mtime_ns
    assert run.finish() == [("car-shadow", "done"), ("kite-surf", "done")]
    assert (out / "car-shadow" / "00000.png").stat().st_mtime_ns == first_frame
    for name in ("car-shadow", "kite-surf"):
        assert outputs(out, name) == outputs(local, name), name


def test_a_video_that_loses_its_last_allowed_actor_is_failed_and_resumes_next_time(cluster, root, local, tmp_path):
    """``attempts=1``: the actor killed mid-car-shadow fails car-shadow with the reason, kite-surf still finishes on
    a new actor; the next invocation resumes car-shadow to the local engine's outputs."""
    out, jobs = tmp_path / "ray", davis_jobs(root, sequences=["car-shadow", "kite-surf"])
    run = Batch(jobs, tiny_batch(out), workers=1, attempts=1)
    run.kill_when(out / "car-shadow" / "00001.png", f"{ACTOR_PREFIX}-0")
    assert run.finish() == [("car-shadow", "failed"), ("kite-surf", "done")]
    fate = summary(out)["car-shadow"]
    assert fate["error"].startswith("the Ray worker tracking it died 1 time(s), last: ") and 2 <= fate["frames"] < 8
    assert Batch(jobs, tiny_batch(out), workers=1).finish() == [("kite-surf", "skipped"), ("car-shadow", "done")]
    assert outputs(out, "car-shadow") == outputs(local, "car-shadow")


def test_eval_davis_run_on_ray_gives_the_csvs_of_the_local_run(cluster, root, local_one_thread, tmp_path):
    ray_out, local_eval = tmp_path / "ray", tmp_path / "local"
    ran = run_tool("eval_davis", "--run", "--davis-root", root, "--out", ray_out, "--sequences", "blackswan,kite-surf",
                   "--engine", "ray", "--workers", "2", "--no-progress", "--method", "persam", *MODEL_ARGS)
    assert ran.returncode == 0, ran.stderr
    ran = run_tool("eval_davis", "--results", local_one_thread, "--davis-root", root, "--out", local_eval,
                   "--sequences", "blackswan,kite-surf", "--no-progress")
    assert ran.returncode == 0, ran.stderr
    for csv in ("global_results-val.csv", "per-sequence_results-val.csv"):
        assert (ray_out / csv).read_text() == (local_eval / csv).read_text()


def test_a_checkpoint_the_actors_cannot_load_is_one_error_line_and_writes_nothing(cluster, root, tmp_path):
    args = [a if a != str(WEIGHTS) else str(tmp_path / "missing.pt") for a in TRACK_ARGS]
    one_error_line(run_tool("batch", "--davis-root", root, "--out", tmp_path / "out", "--engine", "ray", *args),
                   "missing.pt")
    assert not (tmp_path / "out").exists()
    assert not ray.util.list_named_actors(), "actors left on the cluster"


@pytest.mark.parametrize("args, needle", [
    (["--davis-root", "{tmp}/missing"], "missing"),
    (["--davis-root", "{root}", "--engine", "ray", "--workers", "0"], "--workers must be at least 1"),
    (["--davis-root", "{root}", "--cpus-per-worker", "2"], "--cpus-per-worker is an option of --engine ray"),
    (["--davis-root", "{root}", "--max-frames", "0"], "--max-frames must be at least 1"),
])
def test_bad_input_is_one_error_line(root, tmp_path, args, needle):
    args = [a.format(tmp=tmp_path, root=root) for a in args]
    one_error_line(run_tool("batch", *args, "--out", tmp_path / "out", *TRACK_ARGS), needle)
    assert not (tmp_path / "out").exists()


def test_one_reference_over_many_videos_locally_and_on_ray(cluster, root, tmp_path):
    """``--videos`` with a reference photo (blackswan's first frame and mask, resized): every video is searched for
    it from frame 0 (threshold 0: found there), locally and on Ray with the same PNGs and states; a CSV job list takes
    the reference per row, for a row without a first-frame mask."""
    from PIL import Image

    photo, mask = tmp_path / "swan.jpg", tmp_path / "swan.png"
    Image.open(root / "JPEGImages" / "480p" / "blackswan" / "00000.jpg").resize((427, 240)).save(photo)
    Image.open(root / "Annotations" / "480p" / "blackswan" / "00000.png").resize((427, 240), Image.NEAREST).save(mask)
    videos = [root / "JPEGImages" / "480p" / name for name in SEQUENCES]
    find = ["--ref-image", photo, "--ref-mask", mask, "--detect-threshold", "0", "--max-frames", "3", *TRACK_ARGS]
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        ray_args = ["--cpus-per-worker", "2"] if engine == "ray" else []   # 2 torch threads, as the local engine
        ran = run_tool("batch", "--videos", *videos, "--out", out, "--engine", engine, *ray_args, *find)
        assert ran.returncode == 0, ran.stderr
        runs[engine] = out
    for name in SEQUENCES:
        local_files, ray_files = outputs(runs["local"], name), outputs(runs["ray"], name)
        assert local_files == ray_files and len(local_files) == 4, name
        states = [json.loads(line) for line in (runs["local"] / name / "vos_states.jsonl").read_text().splitlines()]
        assert [s["objects"]["1"]["found"] for s in states] == [True, False, False]
        assert (runs["ray"] / name / "vos_states.jsonl").read_text() == (runs["local"] / name /
                                                                          "vos_states.jsonl").read_text()
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"name,video,mask,ref_image,ref_mask\nswan,{videos[1]},,{photo},{mask}\n")
    ran = run_tool("batch", "--csv", jobs, "--out", tmp_path / "csv", "--detect-threshold", "0", "--max-frames", "3",
                   *TRACK_ARGS)
    assert ran.returncode == 0, ran.stderr
    assert outputs(tmp_path / "csv", "swan") == outputs(runs["local"], "blackswan")


# -- a running cluster (--address), --cpus-per-worker, SAM 2.1 ---------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(temp: Path) -> list:
    """Pids of the processes of the cluster whose temporary folder is ``temp`` (each one names it)."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split(None, 1)[0]) for line in ps.splitlines() if str(temp) in line and "ps -eo" not in line]


def _gcs_log(temp: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in temp.glob("session_*/logs/gcs_server.out"))


#: Ray on Linux replaces a loopback --node-ip-address by the machine's own address unless it runs in its
#: single-machine mode (the first variable off): then every part of the cluster is on 127.0.0.1. Ray turns token
#: authentication on by itself when a token file exists in the home folder (another program may write one at any
#: time); this loopback cluster and its driver have it off.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


#: The sequences of the tests that need two videos only.
SOME = ("blackswan", "kite-surf")


@contextlib.contextmanager
def ray_head(folder: Path):
    """``ray start --head --block`` on 127.0.0.1 (2 CPUs, no dashboard, its own temporary folder and free ports) as
    a subprocess; yields ``(address, temporary folder)``. Stopped by SIGTERM to that process (Ray then stops what
    it started); any process of this cluster still there after that is killed by pid and fails the test."""
    temp = Path(tempfile.mkdtemp(prefix="vosray-", dir="/tmp"))       # short: Ray's socket paths live under it
    port = _free_port()
    with open(folder / "ray_start.log", "w") as log:       # the child keeps its own copy
        head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                                 "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                                 "--include-dashboard", "false", "--dashboard-port", str(_free_port()),
                                 "--dashboard-agent-listen-port", str(_free_port()), "--ray-client-server-port",
                                 str(_free_port()), "--temp-dir", str(temp), "--disable-usage-stats"],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **LOOPBACK_ENV},
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "block forever" not in (folder / "ray_start.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (folder / "ray_start.log").read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", temp
    finally:
        if head.poll() is None:
            os.kill(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _processes_of(temp) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _processes_of(temp)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"processes of the test's cluster left after ray start was stopped: {left}"


@pytest.mark.timeout(900)        # a cluster of its own to start and stop, besides the batch
def test_a_running_cluster_at_address_is_used_and_left_running(root, local_one_thread, tmp_path):
    """``tools/batch.py --engine ray --address 127.0.0.1:P`` on a cluster that ``ray start`` runs: the actors run on
    that cluster (its GCS log names them), with 1 CPU and 1 torch thread each (the default on a running
    cluster), the outputs are the local engine's; the cluster is still running afterwards."""
    out = tmp_path / "out"
    with ray_head(tmp_path) as (address, temp):
        cluster_processes = set(_processes_of(temp))
        proc = tool_process("batch", "--davis-root", root, "--sequences", ",".join(SOME), "--out", out, "--engine",
                            "ray", "--address", address, "--workers", "2", *TRACK_ARGS, timeout=600,
                            env={**os.environ, **LOOPBACK_ENV})
        assert proc.returncode == 0, proc.stderr
        assert cluster_processes <= set(_processes_of(temp))             # left running
        names = [f"Actor name {ACTOR_PREFIX}-{n} " for n in range(2)]     # the cluster's GCS log names each actor
        deadline = time.monotonic() + 30
        while not all(name in _gcs_log(temp) for name in names) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(name in _gcs_log(temp) for name in names), _gcs_log(temp)[-3000:]
    assert "2 tracked" in proc.stdout
    for name in SOME:
        assert outputs(out, name) == outputs(local_one_thread, name), name


def test_cpus_per_worker_is_what_each_actor_reserves(cluster, root, local_one_thread, tmp_path):
    """``--cpus-per-worker 1`` with one worker on the 2-CPU cluster (the default there would reserve both): while
    the actor lives the cluster has exactly 1 CPU free, and the outputs are those of 1 torch thread."""
    free, ran = [], []
    batch = threading.Thread(target=lambda: ran.append(run_tool(
        "batch", "--davis-root", root, "--sequences", ",".join(SOME), "--out", tmp_path / "out", "--engine", "ray",
        "--workers", "1", "--cpus-per-worker", "1", *TRACK_ARGS)))
    batch.start()
    while batch.is_alive():
        if f"{ACTOR_PREFIX}-0" in ray.util.list_named_actors():
            free.append(ray.available_resources().get("CPU", 0.0))
        time.sleep(0.02)
    batch.join()
    assert ran[0].returncode == 0, ran[0].stderr
    assert 1.0 in free and min(free) == 1.0, free
    for name in SOME:
        assert outputs(tmp_path / "out", name) == outputs(local_one_thread, name), name


SAM2_ARGS = ["--rle", "--no-progress", "--model", "sam2.1_hiera_tiny_256", "--random-weights", "--device", "cpu"]


def test_sam2_on_ray_gives_the_local_engines_outputs(cluster, tmp_path):
    """SAM 2.1 (hiera-tiny at 256 pixels, seeded random weights; its default method sam2) through ``vos batch
    --engine ray`` (1 actor: 2 torch threads, as the local engine here): the PNGs and RLE of the local engine."""
    root = davis_root(tmp_path / "davis", {"kite-surf": 6}, DATA / "sam2")
    runs = {}
    for engine in ("local", "ray"):
        runs[engine] = tmp_path / engine
        ran = run_tool("batch", "--davis-root", root, "--out", runs[engine], "--engine", engine, *SAM2_ARGS)
        assert ran.returncode == 0, ran.stderr
    local_files, ray_files = outputs(runs["local"], "kite-surf"), outputs(runs["ray"], "kite-surf")
    assert len(local_files) == 7 and local_files == ray_files
    settings = json.loads((runs["ray"] / "kite-surf" / "vos_run.json").read_text())
    assert settings["method"] == "sam2" and settings["model"] == "sam2.1_hiera_tiny_256"
