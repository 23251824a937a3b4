"""``eval_oneshot``: PerSAM / PerSAM-F on the episodic one-shot benchmarks with the pooled IoU meter (see
:mod:`vos.runs.oneshot`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import add_model_args, model_options
from vos.runs.oneshot import DATASETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval_oneshot",
        description="Evaluate PerSAM or PerSAM-F on a one-shot segmentation benchmark under the Matcher protocol "
                    "(HSNet episodes, evaluation at 518x518): per-class pooled foreground/background intersection "
                    "and union, mIoU (mean class IoU) and FB-IoU per fold, headline = mean over folds. Resumable: "
                    "episodes already in OUT/episodes_fold<F>.jsonl are not recomputed.")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS),
                        help="fss (FSS-1000, 1 fold), lvis (LVIS-92i, 10 folds), pascal_part (4 folds), paco_part "
                             "(4 folds), coco20i (4 interleaved folds)")
    parser.add_argument("--root", required=True, metavar="D",
                        help="datasets root holding FSS-1000/, LVIS/, Pascal-Part/, PACO-Part/ or COCO2014/ in "
                             "Matcher's layout (HSNet's FSS-1000/<class>/ layout is accepted too)")
    parser.add_argument("--fold", nargs="+", default=["all"], metavar="F",
                        help="fold number(s) to evaluate, or 'all' (default). The headline mean is over the folds "
                             "evaluated")
    parser.add_argument("--shot", type=int, default=1,
                        help="supports per episode (defines the episodes and class sets); PerSAM uses the first "
                             "support only. Default: %(default)s")
    parser.add_argument("--size", type=int, default=518,
                        help="evaluation resolution: query, support and masks resized to SIZE x SIZE. Default: "
                             "%(default)s (Matcher); HSNet used 400")
    parser.add_argument("--method", choices=("persam", "persam_f"), default="persam",
                        help="persam (training-free) or persam_f (trains 2 mask weights per episode). "
                             "Default: %(default)s")
    parser.add_argument("--episodes", type=int, default=None, metavar="N",
                        help="evaluate only the first N episodes of each fold (the same episodes a full run starts "
                             "with); results are marked partial. Default: the protocol's full count")
    parser.add_argument("--split-file", default=None, metavar="TXT",
                        help="fss only: the test class list (HSNet/Matcher test.txt); default: looked for at "
                             "D/FSS-1000/splits/test.txt, D/FSS-1000/test.txt, D/splits/fss/test.txt")
    parser.add_argument("--no-box-crop", action="store_true",
                        help="pascal_part / paco_part only: do not crop images and masks to the object instance's "
                             "box (the benchmark crops; this changes the numbers)")
    parser.add_argument("--no-save-pred", action="store_true",
                        help="do not write the SIZE x SIZE prediction PNGs (counts are still stored per episode)")
    add_model_args(parser)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder; a folder holding a run with other settings is refused")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tqdm import tqdm

    from vos.runs.oneshot import OneShotRun, evaluate_oneshot, parse_folds, planned_episodes

    args = build_parser().parse_args(argv)
    run = OneShotRun(args.dataset, Path(args.root), Path(args.out), parse_folds(args.fold, args.dataset), args.shot,
                     args.size, args.method, model_options(args), args.episodes, args.split_file,
                     not args.no_box_crop, not args.no_save_pred)
    run.check()
    with tqdm(total=planned_episodes(run), desc=args.dataset, unit="episode", disable=args.no_progress) as bar:
        result = evaluate_oneshot(run, on_episode=lambda: bar.update(1))
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    per_fold = ", ".join(f"{r['mIoU']:.2f}" for r in result.folds)
    print(f"{result.dataset_name} {args.shot}-shot {args.method}: mIoU {result.summary['mIoU (mean over folds)']:.2f} "
          f"(mean of {len(result.folds)} fold(s): {per_fold})")
    print(f"computed {sum(r['computed'] for r in result.folds)}, reused {sum(r['reused'] for r in result.folds)}")
    print(f"wrote {result.json_path}\nwrote {result.md_path}")
    return 0
