"""``eval_oneshot``: PerSAM / PerSAM-F on the episodic one-shot benchmarks with the pooled IoU meter.

Episodes are generated exactly as ``shared/specs/benchmarks.md`` prescribes (legacy RNG seeded with 0, private
to the generator, so the model cannot shift them). Per episode the support image and the query image are resized
to ``--size``² (Pillow bilinear, aspect ratio ignored), the masks with legacy nearest-neighbour sampling; the
engine takes the support as reference and segments the query; the ``--size``² prediction is scored against the
resized query mask. Counts go to ``<out>/episodes_fold<F>.jsonl`` one line per episode (a re-run skips every
episode already there and produces identical totals); predictions to ``<out>/pred/fold<F>/<episode>.png``;
results to ``<out>/results.json`` and ``<out>/results.md``.

PerSAM is one-shot: with ``--shot`` > 1 the episodes (and, for LVIS-92i and PACO-Part, the class sets) are those of
the k-shot protocol but only the **first** support is given to the engine; results record this.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from vos.cli.common import add_model_args, model_from_args
from vos.cli.eval_perseg import METHODS, make_engine
from vos.datasets.coco20i import COCO20i
from vos.datasets.fss import FSS1000
from vos.datasets.lvis import LVIS92i
from vos.datasets.parts import PacoPart, PascalPart
from vos.errors import InputError, MaskError, OutputError
from vos.eval.episodic import (Episode, PooledMeter, episode_counts, fold_mean, resize_image, resize_mask_nearest,
                               summary)
from vos.eval.report import check_run_settings, write_mask_png, write_report

DATASETS = {"fss": FSS1000, "lvis": LVIS92i, "pascal_part": PascalPart, "paco_part": PacoPart, "coco20i": COCO20i}


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
    parser.add_argument("--method", choices=METHODS, default="persam",
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


def open_dataset(args: argparse.Namespace, fold: int):
    """The dataset object of one fold."""
    cls = DATASETS[args.dataset]
    kwargs: Dict[str, Any] = {}
    if args.dataset == "fss":
        kwargs["split_file"] = args.split_file
    if args.dataset in ("pascal_part", "paco_part"):
        kwargs["box_crop"] = not args.no_box_crop
    return cls(args.root, fold, shot=args.shot, **kwargs)


def parse_folds(values: Sequence[str], dataset: str) -> List[int]:
    """Fold numbers from ``--fold`` values (``all`` = every fold of the dataset)."""
    count = DATASETS[dataset].folds
    if list(values) == ["all"]:
        return list(range(count))
    try:
        folds = [int(v) for v in values]
    except ValueError:
        raise InputError(f"--fold takes fold numbers or 'all', got {' '.join(values)}") from None
    for f in folds:
        if not 0 <= f < count:
            raise InputError(f"--fold {f}: {dataset} has folds 0-{count - 1}")
    return sorted(set(folds))


def episode_keys(episode: Episode) -> Dict[str, Any]:
    """What identifies an episode in the log: the query key and the support keys."""
    return {"query": episode.query.key, "supports": [s.key for s in episode.supports]}


def read_done(path: Path) -> Dict[int, dict]:
    """Episode rows of a JSONL file; a truncated last line (interrupted write) is dropped from the file."""
    done: Dict[int, dict] = {}
    if not path.is_file():
        return done
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            done[int(row["episode"])] = row
        except (ValueError, KeyError, TypeError) as err:
            raise OutputError(f"{path}:{number}: not an episode record ({err})") from None
    return done


def run_episode(engine, dataset, episode: Episode, size: int, fit: bool) -> Dict[str, Any]:
    """Segment one episode's query from its first support; the ``size×size`` prediction and GT and the counts."""
    support_image, support_mask = dataset.load(episode.supports[0])
    query_image, query_mask = dataset.load(episode.query)
    shape = (size, size)
    gt = resize_mask_nearest(query_mask, shape)
    error = None
    try:
        engine.set_reference(resize_image(support_image, shape), resize_mask_nearest(support_mask, shape))
        if fit:
            engine.fit()
        pred = engine.segment(resize_image(query_image, shape)).mask
    except MaskError as err:   # e.g. a support part too small for one feature cell: the method predicts nothing
        error = str(err)
        pred = np.zeros(shape, dtype=bool)
    inter, union = episode_counts(gt, pred)
    return {"pred": pred, "intersection": inter, "union": union, "reference_error": error}


def evaluate_fold(args: argparse.Namespace, dataset, fold: int, out: Path, state: dict, bar: tqdm) -> dict:
    """Run (or resume) one fold; return its summary."""
    total = len(dataset) if args.episodes is None else min(args.episodes, len(dataset))
    log_path = out / f"episodes_fold{fold}.jsonl"
    done = read_done(log_path)
    meter = PooledMeter(len(dataset.class_names))
    computed = reference_errors = 0
    try:
        log = open(log_path, "a", encoding="utf-8")
    except OSError as err:
        raise OutputError(f"{log_path}: cannot open the episode log ({err})") from err
    with log:
        for episode in dataset.episodes(total):
            keys = episode_keys(episode)
            row = done.get(episode.index)
            if row is not None:
                if row.get("query") != keys["query"] or row.get("supports") != keys["supports"]:
                    raise OutputError(f"{log_path}: episode {episode.index} was {row.get('query')} ← "
                                      f"{row.get('supports')}, now {keys['query']} ← {keys['supports']}: the folder "
                                      f"holds a run on other data")
            else:
                if state.get("engine") is None:
                    state["engine"] = make_engine(args.method, model_from_args(args))
                result = run_episode(state["engine"], dataset, episode, args.size, args.method == "persam_f")
                if not args.no_save_pred:
                    write_mask_png(out / "pred" / f"fold{fold}" / f"{episode.index:05d}.png", result["pred"])
                row = {"episode": episode.index, "class_index": episode.class_index,
                       "class": dataset.class_names[episode.class_index], **keys,
                       "intersection": result["intersection"], "union": result["union"],
                       "reference_error": result["reference_error"]}
                log.write(json.dumps(row) + "\n")
                log.flush()
                os.fsync(log.fileno())
                computed += 1
            meter.add(episode.class_index, row["intersection"], row["union"])
            reference_errors += row.get("reference_error") is not None
            bar.update(1)
    result = summary(meter, dataset.class_names)
    fold_name = f"{fold} ({dataset.category})" if hasattr(dataset, "category") else str(fold)
    result.update({"fold": fold, "fold_name": fold_name,
                   "episodes_protocol": len(dataset), "episodes_evaluated": total,
                   "complete": total == len(dataset), "computed": computed, "reused": total - computed,
                   "reference_errors": reference_errors})
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.size < 16:
        raise InputError(f"--size must be at least 16, got {args.size}")
    if args.shot < 1:
        raise InputError(f"--shot must be at least 1, got {args.shot}")
    if args.episodes is not None and args.episodes < 1:
        raise InputError(f"--episodes must be at least 1, got {args.episodes}")
    folds = parse_folds(args.fold, args.dataset)
    out = Path(args.out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datasets = {f: open_dataset(args, f) for f in folds}
    dataset_warnings = sorted({str(w.message) for w in caught})
    for message in dataset_warnings:
        print(f"warning: {message}", file=sys.stderr)
    settings = {"tool": "eval_oneshot", "dataset": args.dataset, "root": str(Path(args.root).resolve()),
                "shot": args.shot, "size": args.size, "method": args.method, "model": args.model,
                "checkpoint": Path(args.checkpoint).name if args.checkpoint else None,
                "random_weights": args.random_weights, "box_crop": not args.no_box_crop,
                "split_file": args.split_file}
    check_run_settings(out, settings)
    planned = sum(len(d) if args.episodes is None else min(args.episodes, len(d)) for d in datasets.values())
    state: dict = {}
    with tqdm(total=planned, desc=args.dataset, unit="episode", disable=args.no_progress) as bar:
        fold_results = [evaluate_fold(args, datasets[f], f, out, state, bar) for f in folds]

    first = datasets[folds[0]].protocol()
    protocol = {**first,
                "folds_evaluated": folds, "method": args.method, "model": args.model, "checkpoint": args.checkpoint,
                "random_weights": args.random_weights, "size": args.size,
                "image_resize": f"query and support images to {args.size}x{args.size}, Pillow bilinear, aspect "
                                f"ratio ignored",
                "mask_resize": "legacy nearest neighbour (PyTorch 'nearest', float32 scale)",
                "supports_used": "first support only (PerSAM is one-shot)" if args.shot > 1 else "the support",
                "episode_rng": "numpy RandomState(0), one-element choice without replacement, private to the "
                               "episode generator",
                "meter": "per-class pooled fg/bg intersection and union; class IoU = I / max(U, 1); mIoU = mean "
                         "fg class IoU over the fold's classes; FB-IoU = mean over bg/fg of pooled I / pooled U",
                "headline": "plain mean of per-fold mIoU",
                "empty_reference": "a support mask the engine rejects (MaskError) gives an empty prediction"}
    miou = fold_mean(r["mIoU"] for r in fold_results)
    summary_row = {"mIoU (mean over folds)": miou, "FB-IoU (mean over folds)": fold_mean(r["FB-IoU"]
                                                                                      for r in fold_results),
                   "folds": len(fold_results), "episodes": sum(r["episodes_evaluated"] for r in fold_results),
                   "complete": all(r["complete"] for r in fold_results)}
    rows = [(r["fold_name"], r["classes"], r["episodes_evaluated"], r["episodes_protocol"], r["mIoU"], r["FB-IoU"],
             r["reference_errors"]) for r in fold_results]
    notes = [f"fold {r['fold']}: {r['computed']} episodes computed, {r['reused']} reused" for r in fold_results]
    notes += [f"dataset warning: {m}" for m in dataset_warnings]
    if len(folds) < DATASETS[args.dataset].folds:
        notes.append(f"only folds {folds} of {DATASETS[args.dataset].folds} evaluated: the mean is not the "
                     f"benchmark's headline number")
    if not summary_row["complete"]:
        notes.append("PARTIAL RUN (--episodes): classes without an episode score 0 per protocol; "
                     "'mIoU_classes_with_episodes' in the JSON averages only classes that had episodes")
    per_class = {str(r["fold"]): r["per_class"] for r in fold_results}
    folds_json = [{k: v for k, v in r.items() if k != "per_class"} for r in fold_results]
    json_path, md_path = write_report(out, "results", f"{first['dataset']} {args.shot}-shot — {args.method}",
                                      protocol, summary_row,
                                      ["fold", "classes", "episodes", "protocol episodes", "mIoU", "FB-IoU",
                                       "reference errors"], rows, notes,
                                      extra={"folds": folds_json, "per_class": per_class})
    per_fold = ", ".join(f"{r['mIoU']:.2f}" for r in fold_results)
    print(f"{first['dataset']} {args.shot}-shot {args.method}: mIoU {miou:.2f} "
          f"(mean of {len(fold_results)} fold(s): {per_fold})")
    print(f"computed {sum(r['computed'] for r in fold_results)}, reused {sum(r['reused'] for r in fold_results)}")
    print(f"wrote {json_path}\nwrote {md_path}")
    return 0
