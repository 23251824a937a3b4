"""Memory is flat in video length (the README's promise), measured as what it is: the resident memory of a tracking
process. Each run is a fresh interpreter (``tests/memory_probe.py``) that tracks a long frame folder through
``vos.runs.track`` on the default path of a model family, and reports its resident set size after frame WARM and
after frame LAST; between them the memory may not grow by more than BOUND.

The frames (854×480, the six kite-surf frames played forwards and backwards, one object) are large enough that
keeping anything of a frame would show: a frame's result alone (its label map and the object's float32 logits,
2 MiB) kept every frame would add 160 MiB by LAST (measured with that leak: +82 MiB from frame 20 to frame 60); a
SAM 2 window that did not slide adds 40 KB a frame (measured: +3.2 MiB by LAST), hence a bound of 1 MiB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import KITE, KITE_GT, ROOT, WEIGHTS
from vos.io import load_label_map, save_palette_png

WARM = 20     # the SAM 2 window is full after 16 frames, PerSAM-F is fitted on frame 0
LAST = 100
#: measured +0.1 MiB for both families; a SAM 2 window that never slides: +3.2 MiB (hiera-tiny at 256: 40 KB a frame)
BOUND = 1024 ** 2
MIB = 1024 ** 2


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """LAST + 1 frames of kite-surf (forwards, backwards, ...) and object 1's first-frame mask."""
    root = tmp_path_factory.mktemp("long")
    frames = [Image.open(f).convert("RGB") for f in sorted(KITE.glob("*.jpg"))]
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    (root / "frames").mkdir()
    for i in range(LAST + 1):
        frames[order[i % len(order)]].save(root / "frames" / f"{i:05d}.jpg", quality=90)
    labels = load_label_map(KITE_GT)
    assert labels.shape == (480, 854) and frames[0].size == (854, 480)
    save_palette_png(root / "mask.png", (labels == 1).astype(np.uint8))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "sam2.1_hiera_tiny_256"])
def test_resident_memory_is_flat_over_a_long_video(long_video, tmp_path, model):
    """PerSAM-F (the default method) with the fixture SAM; SAM 2.1 hiera-tiny at 256 with random weights."""
    checkpoint = ["--checkpoint", str(WEIGHTS)] if model == "tiny" else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "memory_probe.py"), model,
                           str(long_video / "frames"), str(long_video / "mask.png"), str(tmp_path / "run"),
                           "--at", f"{WARM},{LAST}", *checkpoint], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["frames"] == LAST + 1
    warm, last = report["rss"][str(WARM)], report["rss"][str(LAST)]
    print(f"{model}: resident {warm / MIB:.1f} MiB after frame {WARM}, {last / MIB:.1f} MiB after frame {LAST}")
    assert last - warm <= BOUND
