"""Time ``vos eval-vos`` against a long-video benchmark's official tool on the same ground truth and predictions.

Both run as whole processes (imports included), alternating A/B (and the order within each round) over ``--runs``
rounds in one invocation; reported: median wall time and median CPU seconds (user + system of the process and its
children), and whether vos's output files equal the official ones (MOSEv2: scores.txt; metrics.json holds run
times). The official tool runs unchanged from its own checkout, with its own interpreter (its venv):

- LVOS: ``lvos-evaluation`` (numpy < 2), ``evaluation_method.py --mp_nums 1`` from its folder; its CSVs are
  removed before each run (it would re-use them);
- SA-V: SAM 2's ``sav_dataset/sav_evaluator.py -n 1``;
- MOSEv2: MOSE-api's ``MOSEv2/sam2_rcms/tools/score.py`` (its pool has ``cpu_count()`` workers, not settable).

vos runs with ``--workers 1``. Defaults: the largest scored fixture case of each benchmark in ``tests/data``::

    python tools/bench_eval_vos.py --benchmark sav --official /path/sam2/sav_dataset --official-python /venv/bin/python
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vos.machine import cpu_info  # noqa: E402

CASES = {"lvos": ("lvos_eval", "perturbed", ["global_results-valid.csv", "per-sequence_results-valid.csv"]),
         "sav": ("sav_eval", "main", ["results.csv"]),
         "mosev2": ("mosev2_eval", "main_fp_late_redetect", ["scores.txt"])}


def default_case(benchmark: str) -> tuple[Path, Path, str | None]:
    folder, name, _ = CASES[benchmark]
    case = REPO / "tests" / "data" / folder / "cases" / name
    spec = json.loads((case / "case.json").read_text())
    gt = (case / spec["gt_root"]).resolve() if "gt_root" in spec else case / "gt"
    return gt, case / "pred", spec.get("set")


def official_command(benchmark: str, official: Path, python: str, gt: Path, pred: Path, out: Path,
                     set: str | None) -> tuple[list[str], Path, Path]:
    """``(command, working folder, folder its outputs land in)``."""
    if benchmark == "lvos":
        return ([python, "evaluation_method.py", "--lvos_path", str(gt), "--set", set or "valid",
                 "--results_path", str(pred), "--mp_nums", "1"], official, pred)
    if benchmark == "sav":
        return [python, "sav_evaluator.py", "--gt_root", str(gt), "--pred_root", str(pred), "-n", "1"], official, pred
    return ([python, str(official / "score.py"), "--meta", str(gt / "meta.json"), "--ann", str(gt / "Annotations"),
             "--pred", str(pred), "--output", str(out)], official, out)


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the child and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", required=True, choices=sorted(CASES))
    p.add_argument("--official", type=Path, required=True, help="the official tool's folder (see above)")
    p.add_argument("--official-python", required=True, help="the interpreter of the official tool's venv")
    p.add_argument("--gt", type=Path, help="ground-truth root (default: the fixture case's)")
    p.add_argument("--pred", type=Path, help="predictions (default: the fixture case's)")
    p.add_argument("--set", default=None, help="LVOS split (default: the fixture case's)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    gt, pred, set_ = default_case(args.benchmark)
    gt, pred, set_ = args.gt or gt, args.pred or pred, args.set or set_
    outputs = CASES[args.benchmark][2]
    times = {"official": [], "vos": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(pred, tmp / "pred")             # the official tools write into (LVOS: and read from) it
        official = official_command(args.benchmark, args.official.resolve(), args.official_python, gt.resolve(),
                                    tmp / "pred", tmp / "official", set_)
        vos = ([sys.executable, "-m", "vos.cli.main", "eval-vos", "--benchmark", args.benchmark, "--gt-root",
                str(gt), "--results", str(tmp / "pred"), "--out", str(tmp / "vos"), "--no-progress"]
               + (["--set", set_] if set_ and args.benchmark == "lvos" else []), REPO)
        for round_ in range(args.runs):
            for name in (("official", "vos") if round_ % 2 == 0 else ("vos", "official")):
                if name == "official":
                    for stale in outputs:
                        (official[2] / stale).unlink(missing_ok=True)
                command, cwd = (official[0], official[1]) if name == "official" else vos
                times[name].append(timed(command, cwd))
        same = all((official[2] / f).read_bytes() == (tmp / "vos" / f).read_bytes() for f in outputs)
    cpu = cpu_info()
    result = {"benchmark": args.benchmark, "gt": str(gt), "pred": str(pred), "runs": args.runs, "cpu": cpu.line(),
              "identical_outputs": same}
    for name, runs in times.items():
        result[name] = {"wall_s": statistics.median(w for w, _ in runs), "cpu_s": statistics.median(c for _, c in runs)}
    result["official_over_vos_wall"] = result["official"]["wall_s"] / result["vos"]["wall_s"]
    print(f"{cpu.line()}\n{args.benchmark}: {args.runs} alternating runs each, whole processes, medians")
    for name in times:
        print(f"  {name:<8} wall {result[name]['wall_s']:.2f} s  CPU {result[name]['cpu_s']:.2f} s")
    print(f"  official / vos wall: {result['official_over_vos_wall']:.2f}x; output files identical: {same}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
