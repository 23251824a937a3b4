"""``vos track`` / ``tools/track.py``: follow the objects of a first-frame mask through a video, frame by frame.

Outputs (each frame as it is computed, atomically): ``--out DIR`` DAVIS palette PNGs ``00000.png`` … (frame 0 is the
given mask), ``--overlay out.mp4``, ``--rle out.jsonl``; plus ``DIR/vos_run.json`` (the exact configuration) and
``DIR/vos_state.pt`` (per-object reference vectors and PerSAM-F weights) so that ``--resume`` continues after the
last complete frame with outputs identical to an uninterrupted run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from vos.cli.common import add_model_args, model_from_args
from vos.errors import OutputError, VideoError
from vos.io.atomic import atomic_write
from vos.io import OverlayWriter, PaletteWriter, RleWriter, load_label_map, read_video, validate_first_mask

RUN_FILE, STATE_FILE = "vos_run.json", "vos_state.pt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vos track", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="video file (mp4, mov, mkv, …) or folder of JPEG/PNG frames")
    p.add_argument("--mask", required=True,
                   help="first-frame mask: DAVIS palette PNG (index = object id), grayscale label PNG, or binary mask "
                        "(non-zero = object 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the per-frame palette PNGs")
    p.add_argument("--overlay", metavar="MP4", help="also write an overlay video (frames with coloured objects)")
    p.add_argument("--rle", metavar="JSONL", help="also write COCO RLE masks, one JSON line per frame")
    p.add_argument("--method", choices=("persam", "persam_f"), default="persam_f",
                   help="training-free PerSAM or PerSAM-F (default: %(default)s)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (frame 0 included)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out after its last frame")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p.add_argument("--resize-mask", action="store_true",
                   help="resize a mask of another size to the frame size (nearest neighbour)")
    p.add_argument("--mask-threshold", type=int, metavar="T",
                   help="read a soft grayscale mask as object 1 where value >= T")
    p.add_argument("--video-backend", choices=("pyav", "decord", "opencv"),
                   help="video decoder (default: PyAV, falling back to OpenCV)")
    g = p.add_argument_group("tracker options (beyond the paper; off by default)")
    g.add_argument("--decoder-batch", type=int, metavar="B",
                   help="prompts per decoder call (default: 1 on CPU, 16 on GPU)")
    g.add_argument("--absence-threshold", type=float, metavar="L",
                   help="report an object absent in a frame when its best logit is below L")
    g.add_argument("--refind-lost", action="store_true",
                   help="search for objects that vanished (the paper keeps them lost)")
    g.add_argument("--reproduce-reference-quirks", action="store_true",
                   help="training-free mode: pick the 'largest' first mask by area modulo 256 like the reference code")
    add_model_args(p)
    return p


def _config(args: argparse.Namespace) -> dict:
    """The settings that decide the outputs (compared on --resume)."""
    from vos import __version__

    keys = ("video", "mask", "method", "model", "checkpoint", "encoder", "random_weights", "resize_mask",
            "mask_threshold", "absence_threshold", "refind_lost", "reproduce_reference_quirks")
    cfg = {k: getattr(args, k) for k in keys}
    cfg["video"], cfg["mask"] = str(Path(args.video).resolve()), str(Path(args.mask).resolve())
    cfg["vos_version"] = __version__
    return cfg


def _completed_frames(out: Path) -> int:
    """Number of consecutive palette PNGs ``00000.png``, ``00001.png``, … already written."""
    n = 0
    while (out / f"{n:05d}.png").is_file():
        n += 1
    return n


def _prepare_out(out: Path, args: argparse.Namespace, config: dict) -> int:
    """Check/clear the output folder; returns how many frames a resumed run already has (0 for a new run)."""
    previous = out / RUN_FILE
    if args.resume:
        if not previous.is_file():
            raise OutputError(f"{out}: nothing to resume (no {RUN_FILE}); run without --resume")
        old = json.loads(previous.read_text())
        changed = [k for k in config if k != "vos_version" and old.get(k) != config[k]]
        if changed:
            raise OutputError(f"{out}: cannot resume: the run used other settings ({', '.join(changed)})")
        return _completed_frames(out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise OutputError(f"{out} already holds files (another run?): use --resume to continue it or "
                              f"--overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return 0


def _track(index: int, frame: np.ndarray, first_label_map: np.ndarray, tracker, out: Path, config: dict):
    """Frame 0: start the objects (and save the state needed to resume); later frames: one tracker step."""
    if index > 0:
        return tracker.step(frame)
    result = tracker.add_objects(frame, first_label_map)
    torch.save(tracker.state_dict(), out / STATE_FILE)
    atomic_write(out / RUN_FILE, lambda f: f.write(json.dumps(config, indent=1) + "\n"), binary=False)
    return result


def _replay(index: int, frame: np.ndarray, done: int, out: Path, writers, tracker) -> None:
    """A frame a resumed run already has: re-render the overlay from its PNG; restore the tracker at the last one."""
    label = load_label_map(writers[-1].path(index))
    for w in writers:
        if isinstance(w, OverlayWriter):
            w.write(index, frame, label)
    if index == done - 1:
        tracker.load_state_dict(torch.load(out / STATE_FILE, weights_only=True), label, index)


def run_tracking(args: argparse.Namespace, model=None, progress: bool = True) -> int:
    """Track ``args.video`` into ``args.out`` (the parsed options of :func:`build_parser`). Returns frames written."""
    from tqdm import tqdm

    from vos.trackers import Tracker

    out = Path(args.out)
    reader = read_video(args.video, backend=args.video_backend)
    label_map = validate_first_mask(load_label_map(args.mask, args.mask_threshold), reader.size, args.mask,
                                    resize=args.resize_mask)
    if reader.num_frames == 1:
        raise VideoError(f"{args.video}: the video has a single frame: nothing to track after the first-frame mask")
    config = _config(args)
    done = _prepare_out(out, args, config)
    total = reader.num_frames if args.max_frames is None else min(args.max_frames, reader.num_frames or 10 ** 9)
    sam = model if model is not None else model_from_args(args)
    tracker = Tracker(sam, method=args.method, decoder_batch=args.decoder_batch,
                      reproduce_reference_quirks=args.reproduce_reference_quirks,
                      absence_threshold=args.absence_threshold, refind_lost=args.refind_lost)
    written = 0
    with contextlib.ExitStack() as stack:
        writers = []       # the palette PNG goes last: its presence marks a frame complete in every output
        if args.overlay:
            writers.append(stack.enter_context(OverlayWriter(args.overlay, reader.fps, reader.size)))
        if args.rle:
            writers.append(stack.enter_context(RleWriter(args.rle, resume_from=done if args.resume else None)))
        writers.append(stack.enter_context(PaletteWriter(out)))
        bar = stack.enter_context(tqdm(total=total, unit="frame", desc=Path(args.video).name, disable=not progress))
        try:
            for index, frame in enumerate(reader):
                if args.max_frames is not None and index >= args.max_frames:
                    break
                t0 = time.perf_counter()
                if index < done:
                    _replay(index, frame, done, out, writers, tracker)
                else:
                    result = _track(index, frame, label_map, tracker, out, config)
                    for w in writers:
                        w.write(index, frame, result.label_map)
                    written += 1
                    bar.set_postfix(fps=f"{1 / max(time.perf_counter() - t0, 1e-9):.3g}",
                                    objects=len(result.present))
                bar.update(1)
        except VideoError as err:
            raise VideoError(f"{err} (every frame before it is written in {out})", frame=err.frame) from None
    if done + written < 2 and (args.max_frames is None or args.max_frames > 1):
        raise VideoError(f"{args.video}: the video has a single frame: nothing to track after the first-frame mask")
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    written = run_tracking(args)
    print(f"wrote {written} frame(s) to {args.out}" + (f", overlay {args.overlay}" if args.overlay else "")
          + (f", RLE {args.rle}" if args.rle else ""))
    return 0
