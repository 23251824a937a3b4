"""PerSAM / PerSAM-F on the episodic one-shot benchmarks with the pooled IoU meter (``vos eval-oneshot``).

Episodes are generated exactly as ``shared/specs/benchmarks.md`` prescribes (legacy RNG seeded with 0, private
to the generator, so the model cannot shift them). Per episode the support image and the query image are resized
to ``size``² (Pillow bilinear, aspect ratio ignored), the masks with legacy nearest-neighbour sampling; the
engine takes the support as reference and segments the query; the ``size``² prediction is scored against the
resized query mask. Counts go to ``<out>/episodes_fold<F>.jsonl`` one line per episode (a re-run skips every
episode already there and produces identical totals); predictions to ``<out>/pred/fold<F>/<episode>.png``;
results to ``<out>/results.json`` and ``<out>/results.md``; the folder is guarded by its settings file.

PerSAM is one-shot: with ``shot`` > 1 the episodes (and, for LVIS-92i and PACO-Part, the class sets) are those of
the k-shot protocol but only the **first** support is given to the engine; results record this.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vos.datasets.coco20i import COCO20i
from vos.datasets.episodes import Episode, resize_image, resize_mask_nearest
from vos.datasets.fss import FSS1000
from vos.datasets.lvis import LVIS92i
from vos.datasets.parts import PacoPart, PascalPart
from vos.errors import InputError, MaskError, OutputError
from vos.eval.episodic import PooledMeter, episode_counts, fold_mean, summary
from vos.eval.report import write_mask_png, write_report
from vos.runs.folder import RunFolder
from vos.runs.options import ModelOptions

DATASETS = {"fss": FSS1000, "lvis": LVIS92i, "pascal_part": PascalPart, "paco_part": PacoPart, "coco20i": COCO20i}


@dataclass(frozen=True)
class OneShotRun:
    """``dataset`` (a key of :data:`DATASETS`) under ``root``; ``folds`` to evaluate (None = all); ``shot``;
    ``size`` (evaluation resolution); ``method``; ``episodes`` (only the first N of each fold: a partial run);
    ``split_file`` (FSS only); ``box_crop`` (PASCAL-Part / PACO-Part); ``save_pred`` (write prediction PNGs)."""

    dataset: str
    root: Path
    out: Path
    folds: Optional[Tuple[int, ...]] = None
    shot: int = 1
    size: int = 518
    method: str = "persam"
    model: ModelOptions = field(default_factory=ModelOptions)
    episodes: Optional[int] = None
    split_file: Optional[str] = None
    box_crop: bool = True
    save_pred: bool = True

    def check(self) -> None:
        if self.size < 16:
            raise InputError(f"--size must be at least 16, got {self.size}")
        if self.shot < 1:
            raise InputError(f"--shot must be at least 1, got {self.shot}")
        if self.episodes is not None and self.episodes < 1:
            raise InputError(f"--episodes must be at least 1, got {self.episodes}")

    def settings(self) -> dict:
        return {"dataset": self.dataset, "root": str(Path(self.root).resolve()), "shot": self.shot, "size": self.size,
                "method": self.method, **self.model.settings(), "box_crop": self.box_crop,
                "split_file": self.split_file}


@dataclass
class OneShotResult:
    """The headline ``summary``, per-fold results, report files and dataset warnings."""

    summary: Dict[str, Any]
    folds: List[dict]
    json_path: Path
    md_path: Path
    warnings: List[str]
    dataset_name: str


def open_dataset(run: OneShotRun, fold: int):
    """The dataset object of one fold."""
    cls = DATASETS[run.dataset]
    kwargs: Dict[str, Any] = {}
    if run.dataset == "fss":
        kwargs["split_file"] = run.split_file
    if run.dataset in ("pascal_part", "paco_part"):
        kwargs["box_crop"] = run.box_crop
    return cls(run.root, fold, shot=run.shot, **kwargs)


def parse_folds(values: Sequence[str], dataset: str) -> Tuple[int, ...]:
    """Fold numbers from ``--fold`` values (``all`` = every fold of the dataset)."""
    count = DATASETS[dataset].folds
    if list(values) == ["all"]:
        return tuple(range(count))
    try:
        folds = [int(v) for v in values]
    except ValueError:
        raise InputError(f"--fold takes fold numbers or 'all', got {' '.join(values)}") from None
    for f in folds:
        if not 0 <= f < count:
            raise InputError(f"--fold {f}: {dataset} has folds 0-{count - 1}")
    return tuple(sorted(set(folds)))


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


def evaluate_fold(run: OneShotRun, dataset, fold: int, engine: Callable[[], Any],
                  on_episode: Optional[Callable[[], None]] = None) -> dict:
    """Run (or resume) one fold; return its summary. ``engine()`` gives the engine (built on first use)."""
    out = Path(run.out)
    total = len(dataset) if run.episodes is None else min(run.episodes, len(dataset))
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
                result = run_episode(engine(), dataset, episode, run.size, run.method == "persam_f")
                if run.save_pred:
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
            if on_episode is not None:
                on_episode()
    result = summary(meter, dataset.class_names)
    fold_name = f"{fold} ({dataset.category})" if hasattr(dataset, "category") else str(fold)
    result.update({"fold": fold, "fold_name": fold_name,
                   "episodes_protocol": len(dataset), "episodes_evaluated": total,
                   "complete": total == len(dataset), "computed": computed, "reused": total - computed,
                   "reference_errors": reference_errors})
    return result


def planned_episodes(run: OneShotRun) -> int:
    """Episodes the run evaluates (for a progress bar)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(len(d) if run.episodes is None else min(run.episodes, len(d))
                   for d in (open_dataset(run, f) for f in (run.folds or parse_folds(["all"], run.dataset))))


def evaluate_oneshot(run: OneShotRun, model=None, on_episode: Optional[Callable[[], None]] = None) -> OneShotResult:
    """Evaluate (or resume) every fold of ``run`` and write the report."""
    from vos.methods import image_engine

    run.check()
    folds = run.folds or parse_folds(["all"], run.dataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datasets = {f: open_dataset(run, f) for f in folds}
    dataset_warnings = sorted({str(w.message) for w in caught})
    folder = RunFolder(Path(run.out), "oneshot", "continue")
    folder.plan(run.settings())
    folder.start(run.settings())
    folder.commit()
    engines: list = []

    def engine():
        if not engines:
            engines.append(image_engine(run.method, model if model is not None else run.model.load()))
        return engines[0]

    fold_results = [evaluate_fold(run, datasets[f], f, engine, on_episode) for f in folds]
    first = datasets[folds[0]].protocol()
    protocol = {**first,
                "folds_evaluated": list(folds), "method": run.method, "model": run.model.name,
                "checkpoint": run.model.checkpoint, "random_weights": run.model.random_weights, "size": run.size,
                "image_resize": f"query and support images to {run.size}x{run.size}, Pillow bilinear, aspect "
                                f"ratio ignored",
                "mask_resize": "legacy nearest neighbour (PyTorch 'nearest', float32 scale)",
                "supports_used": "first support only (PerSAM is one-shot)" if run.shot > 1 else "the support",
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
    if len(folds) < DATASETS[run.dataset].folds:
        notes.append(f"only folds {list(folds)} of {DATASETS[run.dataset].folds} evaluated: the mean is not the "
                     f"benchmark's headline number")
    if not summary_row["complete"]:
        notes.append("PARTIAL RUN (--episodes): classes without an episode score 0 per protocol; "
                     "'mIoU_classes_with_episodes' in the JSON averages only classes that had episodes")
    per_class = {str(r["fold"]): r["per_class"] for r in fold_results}
    folds_json = [{k: v for k, v in r.items() if k != "per_class"} for r in fold_results]
    json_path, md_path = write_report(run.out, "results", f"{first['dataset']} {run.shot}-shot — {run.method}",
                                      protocol, summary_row,
                                      ["fold", "classes", "episodes", "protocol episodes", "mIoU", "FB-IoU",
                                       "reference errors"], rows, notes,
                                      extra={"folds": folds_json, "per_class": per_class})
    return OneShotResult(summary_row, fold_results, json_path, md_path, dataset_warnings, first["dataset"])
