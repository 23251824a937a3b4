"""Stage-by-stage comparison against PerSAM reference fixtures (layout of ``tests/data/persam_ref/README.md``).

A :class:`Stages` collects checks in algorithm order; the first one that fails is reported with its name, so a
discrete mismatch (a point, a box, an index) is not buried under the differences it causes downstream.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
import torch
from PIL import Image

from vos.models.checkpoint import read_state_dict
from vos.models.fast_encoder import use_fast_encoder
from vos.models.tiny import build_sam_from_config

IN_REPO = Path(__file__).parent / "data" / "persam_ref"
ENV = "VOS_PERSAM_FIXTURES"

# Tolerances of the fixture README §8.
SIM_ATOL, LOGIT_ATOL, SCORE_ATOL, WEIGHT_ATOL, CURVE_RTOL, MASK_FRACTION = 1e-5, 1e-4, 1e-4, 1e-4, 1e-4, 1e-3


def fixture_roots() -> List[Path]:
    """The in-repo fixtures plus every root listed in ``$VOS_PERSAM_FIXTURES`` (``os.pathsep``-separated)."""
    extra = [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    return [IN_REPO] + extra


def fixture_cases() -> Iterator[Tuple[str, Path, dict, str]]:
    """``(test id, root, case entry, method)`` for every case and method of every root.

    A root whose ``index.json`` is missing or unreadable still yields one case, which then fails when loaded.
    """
    for root in fixture_roots():
        label = "repo" if root == IN_REPO else str(root)
        try:
            cases = json.loads((root / "index.json").read_text())["cases"]
        except (OSError, ValueError, KeyError) as err:
            yield f"{label}/unreadable-index", root, {"name": None, "error": repr(err)}, ""
            continue
        if not cases:
            yield f"{label}/no-case", root, {"name": None, "error": f"{root / 'index.json'} lists no case"}, ""
        for case in cases:
            if not case.get("methods"):
                yield f"{label}/{case['name']}/no-method", root, {"name": None, "error": f"case {case['name']!r} "
                                                                  f"lists no method"}, ""
            for method in case.get("methods", []):
                yield f"{label}/{case['name']}/{method}", root, case, method


_SAM_CACHE: dict = {}


def load_fixture_sam(root: Path, encoder: str = "stock"):
    """The fixture root's SAM: built from its ``config.json``, weights from ``index.json["weights"]``; ``encoder``
    ``"fast"`` converts it to vos's fused-attention encoder (same weights)."""
    key = (str(root.resolve()), encoder)
    if key not in _SAM_CACHE:
        index = json.loads((root / "index.json").read_text())
        sam = build_sam_from_config(json.loads((root / "config.json").read_text()))
        sam.load_state_dict(read_state_dict(root / index["weights"]), strict=True)
        if encoder == "fast":
            use_fast_encoder(sam)
        _SAM_CACHE[key] = sam.eval().requires_grad_(False)
    return _SAM_CACHE[key]


def read_png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def read_mask(path: Path) -> np.ndarray:
    return read_png(path) > 0


def as_np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class StageMismatch(AssertionError):
    pass


class Stages:
    """Ordered checks; raises :class:`StageMismatch` at the first stage that differs."""

    def __init__(self, case: str):
        self.case, self.passed = case, 0

    def fail(self, stage: str, detail: str):
        raise StageMismatch(f"{self.case}: first differing stage '{stage}' (after {self.passed} matching): {detail}")

    def paired(self, stage: str, ours, expected) -> list:
        """``zip(ours, expected)`` after checking that both have as many items (a case that yields fewer stages,
        objects or curve points than its fixture fails here instead of being truncated)."""
        ours, expected = list(ours), list(expected)
        if len(ours) != len(expected):
            self.fail(stage, f"{len(ours)} items computed, the fixture has {len(expected)}")
        self.passed += 1
        return list(zip(ours, expected))

    def exact(self, stage: str, ours, expected):
        a, b = as_np(ours), as_np(expected)
        if a.shape != b.shape or not np.array_equal(a, b):
            self.fail(stage, f"ours {a.tolist() if a.size < 20 else a.shape} != expected "
                             f"{b.tolist() if b.size < 20 else b.shape}")
        self.passed += 1

    def close(self, stage: str, ours, expected, atol: float = 0.0, rtol: float = 0.0):
        a, b = as_np(ours).astype(np.float64), as_np(expected).astype(np.float64)
        if a.shape != b.shape:
            self.fail(stage, f"shape {a.shape} != {b.shape}")
        if not np.allclose(a, b, atol=atol, rtol=rtol):
            worst = np.abs(a - b).max()
            self.fail(stage, f"max |difference| {worst:.3g} exceeds atol {atol:g} rtol {rtol:g}")
        self.passed += 1

    def mask(self, stage: str, ours, expected):
        a, b = as_np(ours).astype(bool), as_np(expected).astype(bool)
        if a.shape != b.shape:
            self.fail(stage, f"shape {a.shape} != {b.shape}")
        differing = int((a != b).sum())
        if differing > MASK_FRACTION * a.size:
            self.fail(stage, f"{differing} of {a.size} pixels differ (more than {MASK_FRACTION:.1%})")
        self.passed += 1

    def area(self, stage: str, ours: int, expected: int, size: int):
        if abs(int(ours) - int(expected)) > MASK_FRACTION * size:
            self.fail(stage, f"pixel count {ours} vs {expected}")
        self.passed += 1
