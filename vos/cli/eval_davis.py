"""``eval_davis``: DAVIS 2017 semi-supervised J&F of a results folder, with the official CSVs and a bar chart."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import add_run_mode, model_options, print_results, ray_options, tracker_options
from vos.eval.davis import evaluate_and_write, format_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval_davis",
        description="Evaluate DAVIS 2017 semi-supervised predictions exactly as the official davis2017-evaluation "
                    "tool: J (IoU) and F (boundary) per object, Mean/Recall/Decay, first and last frame not scored. "
                    "Always recomputes (existing CSVs are overwritten, never reused); writes "
                    "global_results-<set>.csv, per-sequence_results-<set>.csv and per-sequence_JF-<set>.png. "
                    "A prediction set the official tool rejects (missing PNG, unknown id, wrong size) gives one "
                    "'error:' line, exit status 2 and no CSV.")
    parser.add_argument("--davis-root", required=True, metavar="D",
                        help="DAVIS 2017 root holding Annotations/<resolution>/ and ImageSets/2017/ "
                             "(JPEGImages/ is not needed)")
    parser.add_argument("--results", metavar="R",
                        help="predictions: R/<sequence>/<frame>.png, palette or 8-bit grayscale PNGs whose pixel "
                             "values are object ids, named like the ground-truth annotations")
    parser.add_argument("--set", default="val", help="sequence list ImageSets/2017/<set>.txt. Default: %(default)s")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for the CSVs and the chart (created if needed). Default: the results folder, "
                             "as the official tool does")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes evaluating sequences in parallel, and with --run --engine ray the Ray actors "
                             "tracking them (results do not depend on it). Default: %(default)s")
    parser.add_argument("--sequences", default=None, metavar="A,B",
                        help="comma-separated subset of the set's sequences to evaluate, in this order "
                             "(default: every sequence of the set, in file order)")
    parser.add_argument("--resolution", default="480p", choices=("480p", "Full-Resolution"),
                        help="annotation folder under Annotations/. Default: %(default)s (the official tool's only "
                             "choice)")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not show the progress bar (it is only shown when stderr is a terminal)")
    add_run_mode(parser, "--run mode: track every sequence first (palette PNGs in --out/<sequence>/, complete "
                         "sequences skipped, partial ones resumed; settings in --out/vos_run.json, each video's fate "
                         "in --out/batch_summary.csv), then evaluate --out",
                 help="run the tracker on the set, then evaluate")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sequences = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    if args.run:
        if not args.out:
            parser.error("--run needs --out DIR (where the predictions and the CSVs go)")
        from vos.batch import BatchRun
        from vos.batch.benchmarks import track_davis

        batch = BatchRun(Path(args.out), tracker=tracker_options(args), model=model_options(args))
        track_davis(args.davis_root, batch, set=args.set, resolution=args.resolution, sequences=sequences,
                    engine=args.engine, ray=ray_options(args, workers=args.workers))
        args.results = args.out
    elif args.engine != "local":
        parser.error("--engine ray tracks the set: give --run")
    elif not args.results:
        parser.error("give --results R (a predictions folder) or --run")
    results = Path(args.results)
    result, written = evaluate_and_write(Path(args.davis_root), results, Path(args.out) if args.out else results,
                                         set=args.set, sequences=sequences, workers=args.workers,
                                         resolution=args.resolution, progress=not args.no_progress)
    print_results(format_table(result), written)
    return 0
