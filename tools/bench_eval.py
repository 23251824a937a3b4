"""Time ``vos.eval.davis`` against ``vos-benchmark`` (whose boundary code is the official DAVIS one) on the same data.

Both run one process each (vos: ``workers=1``, in this process; vos-benchmark: ``num_processes=1``, one pool worker),
alternating A/B (and the order within each round) over ``--runs`` rounds in one invocation. Reported: median wall
time and median CPU seconds (user + system, including the pool worker of vos-benchmark once it is reaped), and a
check that the global and per-object mean J and F agree.

Environment (vos.eval.davis does not import torch, so no torch is needed; install vos-benchmark without its
dependencies so that only one ``cv2`` provider, opencv-python-headless, is present)::

    python3 -m venv /tmp/benchenv
    /tmp/benchenv/bin/pip install numpy pillow opencv-python-headless tqdm matplotlib scikit-image
    /tmp/benchenv/bin/pip install --no-deps vos-benchmark==0.1.0
    /tmp/benchenv/bin/python tools/bench_eval.py --runs 5

Defaults use the in-repo test copy of davis-mini and the ``erode_3px`` prediction set of the DAVIS fixtures.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vos.eval.davis import evaluate_davis  # noqa: E402
from vos.machine import cpu_info  # noqa: E402

TEST_DATA = REPO / "tests" / "data" / "davis_eval"
TOLERANCE = 1e-9


def cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def reap_children() -> None:
    """Wait for finished pool workers so that their CPU time is counted in RUSAGE_CHILDREN."""
    while multiprocessing.active_children():
        time.sleep(0.005)


def run_vos(davis_root: Path, preds: Path, sequences: list[str]) -> dict[str, tuple[float, float]]:
    """Per-object (J-Mean, F-Mean) keyed ``<seq>_<id>``, plus ``global``."""
    result = evaluate_davis(davis_root, preds, sequences=sequences, workers=1, progress=False)
    scores = {name: (obj.J_stats.mean, obj.F_stats.mean) for name, obj in result.object_rows()}
    scores["global"] = (result.global_["J-Mean"], result.global_["F-Mean"])
    return scores


def run_vos_benchmark(davis_root: Path, preds: Path) -> dict[str, tuple[float, float]]:
    """The same numbers from vos-benchmark (it reports ×100)."""
    from vos_benchmark.benchmark import benchmark

    _, global_j, global_f, objects = benchmark([str(davis_root / "Annotations" / "480p")], [str(preds)],
                                               strict=False, num_processes=1, verbose=False)
    scores = {f"{video}_{int(k)}": (j[k] / 100, f[k] / 100)
              for video, (j, f) in objects[0].items() for k in j}
    scores["global"] = (global_j[0] / 100, global_f[0] / 100)
    return scores


def timed(fn, *args):
    reap_children()
    wall, cpu = time.perf_counter(), cpu_seconds()
    out = fn(*args)
    wall = time.perf_counter() - wall
    reap_children()
    return out, wall, cpu_seconds() - cpu


def compare(a: dict, b: dict) -> float:
    """Largest absolute difference of J and F means over the keys (which must be the same)."""
    if set(a) != set(b):
        raise SystemExit(f"object sets differ: {sorted(set(a) ^ set(b))}")
    return max(abs(x - y) for key in a for x, y in zip(a[key], b[key]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--davis-root", type=Path, default=TEST_DATA / "data" / "davis-mini",
                        help="DAVIS root with Annotations/480p and ImageSets/2017/val.txt (default: test copy)")
    parser.add_argument("--predictions", type=Path,
                        default=TEST_DATA / "fixtures" / "davis_eval" / "erode_3px" / "pred",
                        help="prediction folder <seq>/<frame>.png (default: fixture erode_3px)")
    parser.add_argument("--runs", type=int, default=5, help="A/B rounds (default: %(default)s)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        preds = Path(tmp) / "pred"  # vos-benchmark writes results.csv into the prediction folder: use a copy
        shutil.copytree(args.predictions, preds)
        listed = (args.davis_root / "ImageSets" / "2017" / "val.txt").read_text().split()
        sequences = [s for s in listed if (preds / s).is_dir()]
        runners = {"vos": lambda: run_vos(args.davis_root, preds, sequences),
                   "vos-benchmark": lambda: run_vos_benchmark(args.davis_root, preds)}
        times = {name: ([], []) for name in runners}
        scores = {}
        print(cpu_info().line())
        print(f"{len(sequences)} sequences ({', '.join(sequences)}), predictions {args.predictions}, "
              f"{args.runs} rounds")
        for round_ in range(args.runs):
            order = list(runners) if round_ % 2 == 0 else list(runners)[::-1]
            for name in order:
                scores[name], wall, cpu = timed(runners[name])
                times[name][0].append(wall)
                times[name][1].append(cpu)
                print(f"  round {round_ + 1} {name:>13}: wall {wall:6.3f} s  cpu {cpu:6.3f} s")
    diff = compare(scores["vos"], scores["vos-benchmark"])
    for name, (walls, cpus) in times.items():
        print(f"{name:>13}: median wall {statistics.median(walls):.3f} s, median cpu {statistics.median(cpus):.3f} s")
    wall_ratio = statistics.median(times["vos-benchmark"][0]) / statistics.median(times["vos"][0])
    cpu_ratio = statistics.median(times["vos-benchmark"][1]) / statistics.median(times["vos"][1])
    print(f"speed-up of vos: {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x cpu")
    j, f = scores["vos"]["global"]
    print(f"global J-Mean {j:.6f}, F-Mean {f:.6f}; largest |difference| of J/F means over "
          f"{len(scores['vos']) - 1} objects + global: {diff:.3g}")
    if diff > TOLERANCE:
        print(f"MISMATCH: J/F means differ by more than {TOLERANCE}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
