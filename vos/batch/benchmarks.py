"""Track a benchmark's videos as its protocol says, into the layout its evaluator reads.

DAVIS 2017: every sequence from its first-frame annotation, the run folders themselves are the predictions. LVOS and
MOSEv2: every frame of ``JPEGImages/<video>/``, each object added on its own first annotated frame; predictions are
the label maps named after the frames. SA-V: every 24 fps frame of ``JPEGImages_24fps/<video>/``, each object added
on its first annotated frame, and each object's own mask kept (SA-V scores overlapping per-object masks, as SAM 2's
``vos_inference.py --per_obj_png_file`` writes them). A video that cannot be tracked is an error: the evaluation
needs all of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from vos.batch.engines import run_engine
from vos.batch.jobs import Job, davis_jobs, entry_job
from vos.batch.layouts import export_label_maps, export_object_masks
from vos.batch.run import BatchRun
from vos.errors import DatasetError, EvaluationError
from vos.io.paths import is_dir


def track_jobs(jobs: List[Job], batch: BatchRun, engine: str = "local", ray=None) -> None:
    """Every job through the batch runner on ``engine``; a failed video raises :class:`EvaluationError`."""
    summary = run_engine(engine, jobs, batch, ray)
    failed = [r for r in summary.results.values() if r is not None and r.status == "failed"]
    if failed:
        raise EvaluationError(f"{len(failed)} video(s) could not be tracked, e.g. {failed[0].video}: "
                              f"{failed[0].error} (see {Path(batch.out) / 'batch_summary.csv'})")


def track_davis(davis_root: Path, batch: BatchRun, set: str = "val", resolution: str = "480p",
                sequences: Optional[Sequence[str]] = None, engine: str = "local", ray=None) -> None:
    """Track every sequence of a DAVIS 2017 set into ``batch.out/<sequence>/`` (complete ones skipped, partial ones
    resumed)."""
    track_jobs(davis_jobs(davis_root, set=set, resolution=resolution, sequences=sequences), batch, engine, ray)


def _frame_root(frames: Optional[Path], default: Path) -> Path:
    root = frames if frames is not None else default
    if not is_dir(root, "frame root", DatasetError):
        raise DatasetError(f"{root}: frame root not found (tracking needs the JPEG frames; give --frames)")
    return root


def lvos_jobs(gt_root: Path, set: Optional[str], frames: Optional[Path] = None) -> List[Job]:
    """One job per video of ``<set>_meta.json``: its frames, each object entering on its meta ``start`` frame (from
    the annotation there: the ids it holds that are not tracked yet)."""
    from vos.datasets.lvos import LvosDataset

    root = _frame_root(frames, Path(gt_root) / "JPEGImages")
    return [entry_job(v.name, root / v.name, [(s.first_frame, s.annotation, None) for s in v.objects.values()])
            for v in LvosDataset(gt_root, set or "valid")]


def mosev2_jobs(gt_root: Path, set: Optional[str], frames: Optional[Path] = None) -> List[Job]:
    """One job per video of the MOSEv2 root: its frames, each object entering on its first annotated frame (the
    released validation set annotates the first frame only)."""
    from vos.datasets.mose import MoseDataset

    root = _frame_root(frames, Path(gt_root) / "JPEGImages")
    return [entry_job(v.name, root / v.name, [(s.first_frame, s.annotation, None) for s in v.objects().values()])
            for v in MoseDataset(gt_root)]


def sav_jobs(gt_root: Path, set: Optional[str], frames: Optional[Path] = None) -> List[Job]:
    """One job per SA-V video: its 24 fps frames, each object entering (from its own binary PNG) on its first
    non-empty annotated frame, per-object masks kept. Object folders ``000``, ``001``, … are tracked as ids 1, 2, …
    (:func:`sav_object_folders`)."""
    from vos.datasets.sav import SavDataset

    dataset = SavDataset(gt_root, set)
    root = _frame_root(frames, Path(gt_root).parent / "JPEGImages_24fps")
    jobs = []
    for name in dataset.videos:
        video = dataset.long_video(name)
        starts = [(s.first_frame, s.annotation, i) for i, s in enumerate(video.objects.values(), start=1)]
        jobs.append(entry_job(name, root / name, starts, object_pngs=True))
    return jobs


def sav_object_folders(job: Job) -> Dict[int, str]:
    """The SA-V object folder of each tracked id of a :func:`sav_jobs` job (the folder its entry's PNG is in)."""
    return {e.obj_id: Path(e.mask).parent.name for e in job.entries}


JOBS: Dict[str, Callable[[Path, Optional[str], Optional[Path]], List[Job]]] = {
    "lvos": lvos_jobs, "mosev2": mosev2_jobs, "sav": sav_jobs}


def track_benchmark(name: str, gt_root: Path, batch: BatchRun, results: Path, set: Optional[str] = None,
                    frames: Optional[Path] = None, engine: str = "local", ray=None) -> Path:
    """Track every video of benchmark ``name`` into ``batch.out/<video>/`` (complete runs skipped, partial ones
    resumed), then write the predictions in the layout its evaluator reads into ``results`` (returned)."""
    jobs = JOBS[name](Path(gt_root), set, frames)
    track_jobs(jobs, batch, engine, ray)
    for job in jobs:
        run = Path(batch.out) / job.name
        if name == "sav":
            export_object_masks(run, job, results / job.name, sav_object_folders(job))
        else:
            export_label_maps(run, job, results / job.name)
    return results
