"""``vos eval-vos``: the long-video benchmarks LVOS, SA-V and MOSEv2, scored exactly as their official tools score
them, with the same output files; ``--run`` tracks the benchmark first, as its protocol says."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import add_run_mode, model_options, print_results, ray_options, tracker_options
from vos.eval.benchmarks import BENCHMARKS

OUTPUTS = {"lvos": "global_results-<set>.csv, per-sequence_results-<set>.csv", "sav": "results.csv",
           "mosev2": "scores.txt, metrics.json"}


def build_parser() -> argparse.ArgumentParser:
    layouts = "\n".join(f"  {b.name:<7} ground truth: {b.gt_layout}\n          predictions: {b.results_layout}\n"
                        f"          writes: {OUTPUTS[b.name]} (as {b.official})" for b in BENCHMARKS.values())
    parser = argparse.ArgumentParser(
        prog="vos eval-vos", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score predictions on a long-video benchmark exactly as its official tool does (its frames, its "
                    "J and F, its means), writing the official tool's output files into --out. Always recomputes. "
                    "A prediction set the official tool rejects, or one it would crash on, gives one 'error:' line, "
                    "exit status 2, and no output file.\n\n" + layouts)
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("--gt-root", required=True, metavar="GT", help="the benchmark's own ground-truth root "
                                                                         "(layouts above)")
    parser.add_argument("--results", metavar="PRED", help="the predictions, in the benchmark's layout (above)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the output files (created if needed); with --run also the runs "
                             "(DIR/runs/<video>/) and the predictions (DIR/results/)")
    parser.add_argument("--set", default=None, metavar="S",
                        help="LVOS: the split whose <S>_meta.json is in GT (default: valid); SA-V: a video list file "
                             "such as sav_val.txt (default: every video folder of GT); MOSEv2: not used")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes scoring videos in parallel (the numbers do not depend on it); with --run "
                             "--engine ray also the Ray actors. Default: %(default)s")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    run = add_run_mode(parser, "--run mode: track every video of the benchmark first (each object added on its own "
                               "first annotated frame; SA-V: every 24 fps frame tracked, each object's own mask "
                               "kept), write the predictions in the layout the evaluator reads, then score them",
                       help="track the benchmark, then evaluate")
    run.add_argument("--frames", metavar="F",
                     help="the frame root (LVOS, MOSEv2: GT/JPEGImages; SA-V: JPEGImages_24fps beside GT). "
                          "Default: there")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    benchmark = BENCHMARKS[args.benchmark]
    out = Path(args.out)
    if args.run:
        if args.results:
            parser.error("--run writes the predictions into DIR/results: give --results or --run, not both")
        from vos.batch import BatchRun
        from vos.batch.benchmarks import track_benchmark

        batch = BatchRun(out / "runs", tracker=tracker_options(args), model=model_options(args))
        results = track_benchmark(benchmark.name, Path(args.gt_root), batch, out / "results", set=args.set,
                                  frames=None if args.frames is None else Path(args.frames), engine=args.engine,
                                  ray=ray_options(args, workers=args.workers))
    elif args.engine != "local":
        parser.error("--engine ray tracks the benchmark: give --run")
    elif args.frames:
        parser.error("--frames is for --run")
    elif not args.results:
        parser.error("give --results PRED (a predictions folder) or --run")
    else:
        results = Path(args.results)
    result, written = benchmark.evaluate_and_write(Path(args.gt_root), results, out, set=args.set,
                                                   progress=not args.no_progress, workers=args.workers)
    print_results(benchmark.table(result), written)
    return 0
