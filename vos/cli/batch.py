"""``vos batch`` / ``tools/batch.py``: track many videos, each into its own run folder, locally or on Ray.

Jobs come from a DAVIS 2017 root (--davis-root, one per sequence of ImageSets/2017/<set>.txt), a YouTube-VOS root
(--youtube-root, one per video of <split>/JPEGImages, each object added on its first annotated frame; with
--submission also the server's zip of every video's PNGs named after its frames), an LVOS, MOSEv2 or SA-V root
(--lvos-root, --mosev2-root, --sav-root: each object added on its own first annotated frame; `vos eval-vos --run`
also writes the evaluator's layout and scores it), a CSV manifest (--csv, header
name,video,mask, optionally ref_image,ref_mask for a photo of objects to find, with or without a mask; relative
paths are relative to the CSV) or a list of videos (--videos, with --ref-image / --ref-mask: find these objects in
every video). Each video is tracked from its first-frame mask and / or its reference photos into --out/<name>/
(palette PNGs 00000.png …, vos_run.json, vos_states.jsonl, vos_state.pt), with --rle / --overlay also into
--out/<name>.jsonl / --out/<name>.mp4.

Nothing is lost: a video whose folder is complete is skipped, a partial one resumes after its last frame, a video that
fails (a corrupt frame, a bad mask, out of memory) is recorded and the others go on; --out/batch_summary.csv and .json
(video, status, frames, seconds, error) are rewritten as each video finishes. The engines write the same outputs
(byte for byte at the same torch thread count per video): 'local' tracks one video after another in this process;
'ray' runs --workers Ray actors (each loads the model once and tracks one video at a time with --cpus-per-worker
torch threads), replacing an actor that dies mid-video and resuming its video. Without --address the Ray engine
starts a local cluster on 127.0.0.1 and stops it at the end; with one it uses that cluster (vos installed on every
node, the same paths there) and leaves it running.

Exit status 0 when every video is done or skipped; otherwise 2 with one 'error:' line naming how many failed and where
the summary is.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import (add_engine_args, add_model_args, add_reference_args, add_tracker_args, model_options,
                            ray_options, references, tracker_options)
from vos.errors import InputError

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vos batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_argument_group("jobs (one of)").add_mutually_exclusive_group(required=True)
    source.add_argument("--davis-root", metavar="R", help="DAVIS 2017 root (JPEGImages/, Annotations/, ImageSets/)")
    source.add_argument("--youtube-root", metavar="R",
                        help="YouTube-VOS root (<split>/JPEGImages, <split>/Annotations)")
    source.add_argument("--lvos-root", metavar="R",
                        help="LVOS root (JPEGImages/, Annotations/, <set>_meta.json): each object added on its meta "
                             "start frame")
    source.add_argument("--mosev2-root", metavar="R",
                        help="MOSEv2 root (JPEGImages/, Annotations/, meta.json): each object added on its first "
                             "annotated frame")
    source.add_argument("--sav-root", metavar="GT",
                        help="SA-V ground-truth folder (Annotations_6fps, beside JPEGImages_24fps): every 24 fps "
                             "frame, each object from its own PNG, per-object masks in DIR/<video>/objects/")
    source.add_argument("--csv", metavar="FILE",
                        help="job list with the header name,video,mask and / or ref_image,ref_mask")
    source.add_argument("--videos", nargs="+", metavar="VIDEO",
                        help="video files or frame folders without masks (with --ref-image / --ref-mask); each "
                             "named after its file")
    g = p.add_argument_group("dataset options")
    g.add_argument("--set", default=None,
                   help="DAVIS: sequence list ImageSets/2017/<set>.txt (default: val); LVOS: split of <set>_meta.json "
                        "(default: valid); SA-V: a video list file such as sav_val.txt (default: every video)")
    g.add_argument("--resolution", default="480p", choices=("480p", "Full-Resolution"),
                   help="DAVIS frame and annotation folder. Default: %(default)s")
    g.add_argument("--sequences", metavar="A,B", help="DAVIS: only these sequences of the set, in this order")
    g.add_argument("--split", default="valid", help="YouTube-VOS split folder. Default: %(default)s")
    g.add_argument("--submission", metavar="ZIP",
                   help="YouTube-VOS: once every video is tracked, write the server's submission zip "
                        "(Annotations/<video>/<frame>.png for every frame of <split>/JPEGImages)")
    p.add_argument("--out", required=True, metavar="DIR", help="one run folder per video: DIR/<name>/")
    p.add_argument("--max-frames", type=int, metavar="N", help="track at most N frames of each video (frame 0 "
                                                               "included)")
    p.add_argument("--rle", action="store_true", help="also write COCO RLE masks to DIR/<name>.jsonl")
    p.add_argument("--overlay", action="store_true", help="also write an overlay video DIR/<name>.mp4")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    add_reference_args(p)
    p.add_argument("--redetect", action="store_true",
                   help="each video's first-frame objects become references: lost objects are found again")
    add_engine_args(p)
    add_tracker_args(p)
    add_model_args(p)
    return p


def job_source(args: argparse.Namespace):
    """The :class:`~vos.batch.sources.JobSource` of the job options (exactly one given, argparse checks)."""
    from vos.batch.sources import BENCHMARK_ROOTS, JobSource

    roots = {kind: getattr(args, f"{kind}_root") for kind in ("davis", "youtube", *BENCHMARK_ROOTS)}
    kind = next((k for k, root in roots.items() if root), None)
    sequences = tuple(s.strip() for s in args.sequences.split(",") if s.strip()) if args.sequences else None
    return JobSource(videos=tuple(args.videos or ()), kind=kind, root=roots.get(kind), csv=args.csv, set=args.set,
                     resolution=args.resolution, sequences=sequences, split=args.split)


class BatchBar:
    """A tqdm bar over the videos of a batch (done / total) with the overall frames per second of the videos tracked
    in this invocation; a failed video is written above it."""

    def __init__(self, total: int, disable: bool = False):
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="video", desc="videos", disable=disable)
        self._start, self._frames, self._failed = time.perf_counter(), 0, 0

    def __call__(self, result) -> None:
        from tqdm import tqdm

        if result.status == "done":
            self._frames += result.frames
        if result.status == "failed":
            self._failed += 1
            tqdm.write(f"failed: {result.video}: {result.error}", file=sys.stderr)
        fps = self._frames / max(time.perf_counter() - self._start, 1e-9)
        self._bar.set_postfix(fps=f"{fps:.3g}", failed=self._failed, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vos.batch import BatchRun, run_engine

    args = build_parser().parse_args(argv)
    if args.submission and not args.youtube_root:
        raise InputError("--submission is for --youtube-root (the YouTube-VOS server's zip)")
    jobs = job_source(args).jobs()
    batch = BatchRun(Path(args.out), tracker=tracker_options(args), model=model_options(args),
                     max_frames=args.max_frames, rle=args.rle, overlay=args.overlay, references=references(args),
                     redetect=args.redetect)
    for job in jobs[:1]:
        batch.job_run(job).check()          # options that cannot work fail once, not once per video
    options = ray_options(args)
    bar = BatchBar(len(jobs), disable=args.no_progress)
    try:
        summary = run_engine(args.engine, jobs, batch, options, on_result=bar)
    finally:
        bar.close()
    summary.check()
    counts = summary.counts()
    print(f"{len(jobs)} video(s) in {args.out}: {counts['done']} tracked, {counts['skipped']} already complete; "
          f"summary {summary.path}")
    if args.submission:
        from vos.batch.layouts import youtube_submission

        print(f"wrote {youtube_submission(Path(args.out), jobs, Path(args.submission))}")
    return 0
