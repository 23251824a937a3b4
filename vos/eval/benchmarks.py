"""The long-video benchmarks evaluated as their official tools do, by name: LVOS (``lvos-evaluation``), SA-V
(SAM 2's ``sav_evaluator.py``) and MOSEv2 (MOSE-api's ``score.py``).

Every evaluator module has ``evaluate(gt_root, results, set, progress=, workers=) -> result`` (nothing written),
``write_outputs(result, out_dir) -> [paths]`` (the official tool's files, same names and text) and
``format_table(result) -> str``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import List, Optional


@dataclass(frozen=True)
class Benchmark:
    """``name`` (``--benchmark``), its evaluator ``module``, the official tool it reproduces, ``default_set`` (the
    ``--set`` used when none is given), the layout of its ground-truth root and of the predictions it reads."""

    name: str
    module: str
    official: str
    default_set: Optional[str]
    gt_layout: str
    results_layout: str

    def evaluator(self) -> ModuleType:
        return importlib.import_module(self.module)

    def evaluate_and_write(self, gt_root: Path, results: Path, out_dir: Path, set: Optional[str] = None,
                           progress: bool = False, workers: int = 1):
        """Evaluate ``results`` (nothing is written unless the whole set is accepted), then write the official
        output files into ``out_dir``; returns ``(result, written paths)``."""
        module = self.evaluator()
        result = module.evaluate(gt_root, results, set if set is not None else self.default_set, progress=progress,
                                 workers=workers)
        written: List[Path] = module.write_outputs(result, out_dir)
        return result, written

    def table(self, result) -> str:
        return self.evaluator().format_table(result)


BENCHMARKS = {b.name: b for b in (
    Benchmark("lvos", "vos.eval.lvos", "lvos-evaluation (LingyiHongfd/lvos-evaluation)", "valid",
              "GT/Annotations/<video>/<frame>.png (palette) and GT/<set>_meta.json",
              "PRED/<video>/<frame>.png palette PNGs"),
    Benchmark("sav", "vos.eval.sav", "sav_dataset/sav_evaluator.py (facebookresearch/sam2)", None,
              "GT/<video>/<object:03d>/<frame>.png, one binary PNG per object (SA-V's Annotations_6fps)",
              "PRED/<video>/<object:03d>/<frame>.png, the same per-object layout"),
    Benchmark("mosev2", "vos.eval.mosev2", "MOSEv2/sam2_rcms/tools/score.py (henghuiding/MOSE-api)", None,
              "GT/meta.json and GT/Annotations/<video>/<frame>.png (palette)",
              "PRED/<video>/<frame>.png palette PNGs"),
)}
