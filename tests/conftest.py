"""Shared test set-up: the tiny fixture model and its command-line arguments, small real inputs, running a tool
in-process or as a subprocess, and the one-error-line check."""
import contextlib
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
DEMO = ROOT / "demo"
WEIGHTS = DATA / "persam_ref" / "weights" / "tiny_sam_public.pt"
#: The tiny fixture SAM on the CPU, as command-line options.
MODEL_ARGS = ["--model", "tiny", "--checkpoint", str(WEIGHTS), "--encoder", "stock", "--device", "cpu"]
KITE = DATA / "davis_frames" / "JPEGImages" / "480p" / "kite-surf"
KITE_GT = DATA / "davis_frames" / "Annotations" / "480p" / "kite-surf" / "00000.png"
APPLE = DEMO / "apple.mp4"
APPLE_MASK = DEMO / "apple_first_frame_mask.png"


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_tool(name: str, *args: str) -> Ran:
    """``vos <name> args`` in this process (``vos.cli.<name>.main`` through the same error handling as the command
    line), capturing what it prints."""
    from vos.cli.common import run

    module = importlib.import_module(f"vos.cli.{name.replace('-', '_')}")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(module.main, [str(a) for a in args])
    return Ran(code, out.getvalue(), err.getvalue())


def tool_process(name: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python tools/<name>.py args`` in a fresh interpreter (where the process itself is what is tested)."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)], capture_output=True,
                          text=True, **kwargs)


def one_error_line(proc, *needles: str) -> str:
    """Exit status 2, exactly one ``error:`` line (progress-bar lines may precede it) containing every needle, and no
    traceback; returns the line."""
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="session")
def tiny_sam():
    """The conformance fixtures' tiny SAM (seeded random weights), stock encoder, CPU."""
    from conformance import IN_REPO, load_fixture_sam

    return load_fixture_sam(IN_REPO)


def small_kite(folder: Path, frames: int = 5, size=(427, 240)) -> tuple:
    """The first ``frames`` kite-surf frames (3 objects) at ``size`` (W, H) as a JPEG folder, and its first-frame
    palette mask: ``(frame folder, mask path)``."""
    from vos.io import load_label_map, save_palette_png

    frame_dir = folder / "frames"
    frame_dir.mkdir(parents=True)
    for i, f in enumerate(sorted(KITE.glob("*.jpg"))[:frames]):
        Image.open(f).resize(size).save(frame_dir / f"{i:05d}.jpg", quality=95)
    mask = folder / "mask.png"
    save_palette_png(mask, np.array(Image.fromarray(load_label_map(KITE_GT)).resize(size, Image.NEAREST)))
    return frame_dir, mask


def pngs(folder: Path) -> dict:
    """``{name: pixels}`` of the frame PNGs of a run folder."""
    return {p.name: np.array(Image.open(p)) for p in sorted(folder.glob("[0-9]*.png"))}


def evaluator_cases(repo_cases: Path, env: str) -> List:
    """One ``pytest.param`` per case folder of an evaluator's conformance fixtures: those under ``repo_cases``, then
    those under each folder listed in the environment variable ``env`` (``os.pathsep``-separated); a listed folder
    that does not exist is a case of its own (``…-MISSING``), so that it fails instead of vanishing."""
    extra = [p for p in os.environ.get(env, "").split(os.pathsep) if p]
    params = []
    for label, root in [("repo", repo_cases)] + [(f"env{i}", Path(p)) for i, p in enumerate(extra)]:
        if not root.is_dir():
            params.append(pytest.param(root, id=f"{label}-{root.name}-MISSING"))
            continue
        params += [pytest.param(case, id=f"{label}-{case.name}") for case in sorted(p for p in root.iterdir()
                                                                                   if p.is_dir())]
    return params
