"""``tools/persam.py`` end to end, and the engine's input checks (one clear line for bad input)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conformance import IN_REPO, load_fixture_sam, read_png
from vos.errors import InputError, MaskError
from vos.persam import PerSAM

ROOT = Path(__file__).resolve().parents[1]
CASE = IN_REPO / "cases" / "image_cat" / "inputs"
WEIGHTS = IN_REPO / "weights" / "tiny_sam_public.pt"
MODEL = ["--model", "tiny", "--checkpoint", str(WEIGHTS), "--encoder", "stock", "--device", "cpu"]


def persam_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "persam.py"), *args], capture_output=True, text=True)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(CASE / "test_image.png").save(folder / "img10.png")
    Image.open(CASE / "test_image.png").convert("RGB").save(folder / "img2.jpg", quality=95)
    (folder / ".hidden.png").write_bytes(b"not an image")
    return folder


def test_tool_writes_the_engines_masks_and_overlays(tmp_path, photos):
    out = tmp_path / "out"
    proc = persam_cli("--ref-image", str(CASE / "ref_image.png"), "--ref-mask", str(CASE / "ref_mask.png"),
                      "--images", str(photos), "--out", str(out), *MODEL)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["img10.png", "img10_overlay.jpg", "img2.png",
                                                     "img2_overlay.jpg", "vos_run.json"]
    expected = PerSAM(load_fixture_sam(IN_REPO)).set_reference(read_png(CASE / "ref_image.png"),
                                                                read_png(CASE / "ref_mask.png"))
    written = np.array(Image.open(out / "img10.png"))
    np.testing.assert_array_equal(written > 0, expected.segment(read_png(CASE / "test_image.png")).mask)
    assert set(np.unique(written)) <= {0, 255}
    assert Image.open(out / "img10_overlay.jpg").size == Image.open(CASE / "test_image.png").size


def test_tool_finetune_runs_persam_f(tmp_path, photos):
    proc = persam_cli("--ref-image", str(CASE / "ref_image.png"), "--ref-mask", str(CASE / "ref_mask.png"),
                      "--images", str(photos), "--out", str(tmp_path / "f"), "--finetune", *MODEL)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "f" / "img2.png").exists()


def _error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def test_tool_bad_input(tmp_path, photos):
    ref, mask = str(CASE / "ref_image.png"), str(CASE / "ref_mask.png")
    base = ["--images", str(photos), "--out", str(tmp_path / "o")]
    assert "missing.png does not exist" in _error_line(persam_cli("--ref-image", str(tmp_path / "missing.png"),
                                                                  "--ref-mask", mask, *base, *MODEL))
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((195, 260), np.uint8)).save(empty)
    assert "no foreground" in _error_line(persam_cli("--ref-image", ref, "--ref-mask", str(empty), *base, *MODEL))
    small = tmp_path / "small.png"
    dot = np.zeros((195, 260), np.uint8)
    dot[50:53, 60:63] = 255
    Image.fromarray(dot).save(small)
    line = _error_line(persam_cli("--ref-image", ref, "--ref-mask", str(small), *base, *MODEL))
    assert "small.png" in line and "too small" in line and "feature cell" in line
    wrong = tmp_path / "wrong.png"
    Image.fromarray(np.full((100, 100), 255, np.uint8)).save(wrong)
    assert "differs from the reference image size" in _error_line(
        persam_cli("--ref-image", ref, "--ref-mask", str(wrong), *base, *MODEL))
    assert "unknown model name 'vit_z'" in _error_line(
        persam_cli("--ref-image", ref, "--ref-mask", mask, *base, "--model", "vit_z"))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(WEIGHTS.read_bytes()[:5000])
    line = _error_line(persam_cli("--ref-image", ref, "--ref-mask", mask, *base, "--model", "tiny", "--checkpoint",
                                  str(corrupt)))
    assert "corrupt.pth" in line and "cannot be loaded safely" in line
    line = _error_line(persam_cli("--ref-image", ref, "--ref-mask", mask, *base, "--model", "vit_b", "--checkpoint",
                                  str(WEIGHTS)))
    assert "does not fit model 'vit_b'" in line
    (tmp_path / "nothing").mkdir()
    assert "has no JPEG/PNG" in _error_line(persam_cli("--ref-image", ref, "--ref-mask", mask, "--images",
                                                       str(tmp_path / "nothing"), "--out", str(tmp_path / "o"),
                                                       *MODEL))


def test_engine_input_checks():
    sam = load_fixture_sam(IN_REPO)
    image = read_png(CASE / "ref_image.png")
    with pytest.raises(InputError, match="no reference"):
        PerSAM(sam).segment(image)
    with pytest.raises(MaskError, match="no foreground"):
        PerSAM(sam).set_reference(image, np.zeros(image.shape[:2], bool))
    with pytest.raises(InputError, match="RGB uint8"):
        PerSAM(sam).set_reference(image.astype(np.float32), np.ones(image.shape[:2], bool))
    # a 2-D mask is painted R = 128 (PerSeg convention): same grid as the RGB annotation
    rgb = read_png(CASE / "ref_mask.png")
    a = PerSAM(sam).set_reference(image, rgb).reference
    b = PerSAM(sam).set_reference(image, rgb[..., 0] > 0).reference
    assert bool((a.grid == b.grid).all())
