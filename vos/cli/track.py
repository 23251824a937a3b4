"""``vos track`` / ``tools/track.py``: follow the objects of the first frame through a video, frame by frame.

The source (--video) is a video file, a folder of frames, a network stream (rtsp://, rtsps://, http(s)://, tcp://,
udp://, srt://), '-' (a container stream on standard input, e.g. `ffmpeg ... -f mpegts - | vos track --video - ...`)
or a camera (camera:0 or /dev/video0). The first frame's objects come from --mask, or from clicks and boxes
(--point x,y[,label] and --box x0,y0,x1,y1 in first-frame pixels, (x, y) order; --object-id N starts object N),
turned into masks by the model's prompt decoder and saved as frame 0. Objects can also come from photos: each
--ref-image with its --ref-mask (values = object ids) names objects that are searched for on every frame until found
(PerSAM's location prior on the tracking model's own features), then tracked, and searched for again when they are
reported absent on --lost-after consecutive frames; --redetect does the same for the first frame's objects.

Outputs (each frame as it is computed, atomically): ``--out DIR`` DAVIS palette PNGs ``00000.png`` … (frame 0 is the
given mask), ``--overlay out.mp4``, ``--rle out.jsonl``; plus ``DIR/vos_run.json`` (the settings of the run, and
when each object was found and lost), ``DIR/vos_states.jsonl`` (per frame and object: searching or tracking, the
detection score, found) and ``DIR/vos_state.pt`` (what resuming needs) so that ``--resume`` continues after the
last complete frame with outputs identical to an uninterrupted run. Ctrl-C or SIGTERM stop after the frame in
progress, every output closed.
"""
from __future__ import annotations

import argparse
import operator
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from vos.cli.common import (FrameBar, add_model_args, add_reference_args, add_tracker_args, model_options, references,
                            stop_on_signals, tracker_options)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vos track", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True,
                   help="video file (mp4, mov, mkv, …), folder of JPEG/PNG frames, stream URL, '-' (standard input) "
                        "or camera:N")
    p.add_argument("--mask",
                   help="first-frame mask: DAVIS palette PNG (index = object id), grayscale label PNG, or binary mask "
                        "(non-zero = object 1). Or give prompts:")
    g = p.add_argument_group("prompts instead of a mask (first-frame pixels, (x, y) order; repeatable)")
    g.add_argument("--point", action=PromptAction, metavar="X,Y[,L]",
                   help="a click: label L = 1 on the object (default), 0 on the background")
    g.add_argument("--box", action=PromptAction, metavar="X0,Y0,X1,Y1", help="a box around the object")
    g.add_argument("--object-id", action=PromptAction, type=int, metavar="N",
                   help="the prompts after it belong to object N (default: object 1)")
    add_reference_args(p)
    p.add_argument("--redetect", action="store_true",
                   help="the first frame and its objects (--mask or prompts) become references: an object lost for "
                        "--lost-after frames is searched for and found again")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the per-frame palette PNGs")
    p.add_argument("--overlay", metavar="MP4", help="also write an overlay video (frames with coloured objects)")
    p.add_argument("--rle", metavar="JSONL", help="also write COCO RLE masks, one JSON line per frame")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (frame 0 included; N >= 1)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out after its last frame")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (removed only once the new run has written its first frame)")
    p.add_argument("--resize-mask", action="store_true",
                   help="resize a mask of another size to the frame size (nearest neighbour)")
    p.add_argument("--mask-threshold", type=int, metavar="T",
                   help="read a soft grayscale mask as object 1 where value >= T")
    p.add_argument("--video-backend", choices=("pyav", "decord", "opencv"),
                   help="video decoder (default: PyAV, falling back to OpenCV)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    g = p.add_argument_group("live sources")
    g.add_argument("--realtime", action="store_true",
                   help="when tracking falls behind, skip to the newest frame (default: every frame, in order)")
    g.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    g.add_argument("--open-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to connect to a stream (default: %(default)s)")
    g.add_argument("--read-timeout", type=float, default=10.0, metavar="S",
                   help="a stream that sends nothing for S seconds ends the run (default: %(default)s)")
    g.add_argument("--reconnect", type=int, default=5, metavar="N",
                   help="reconnection attempts after a stream drops, with back-off (default: %(default)s)")
    g.add_argument("--rtsp-transport", choices=("tcp", "udp"), default="tcp", help="default: %(default)s")
    add_tracker_args(p)
    add_model_args(p)
    return p


class PromptAction(argparse.Action):
    """--point, --box and --object-id in command-line order, grouped into objects (:class:`vos.prompts.PromptGroups`;
    a malformed value is reported when the run starts, as one error line)."""

    def __call__(self, parser, namespace, value, option_string=None):
        items = getattr(namespace, "prompt_items", None) or []
        items.append((self.dest, value))
        namespace.prompt_items = items


def prompts(args: argparse.Namespace) -> tuple:
    from vos.prompts import PromptGroups, parse_box, parse_point

    groups = PromptGroups()
    for kind, value in getattr(args, "prompt_items", None) or []:
        if kind == "object_id":
            groups.start(value)
        elif kind == "point":
            groups.add_point(parse_point(value))
        else:
            groups.add_box(parse_box(value))
    return groups.prompts()


def track_run(args: argparse.Namespace):
    """The :class:`~vos.runs.TrackRun` of the parsed options."""
    from vos.io.live import LiveOptions
    from vos.runs import TrackRun

    live = LiveOptions(open_timeout=args.open_timeout, read_timeout=args.read_timeout, attempts=args.reconnect,
                       rtsp_transport=args.rtsp_transport)
    return TrackRun(video=args.video, mask=args.mask, out=Path(args.out), overlay=args.overlay, rle=args.rle,
                    max_frames=args.max_frames, resume=args.resume, overwrite=args.overwrite,
                    resize_mask=args.resize_mask, mask_threshold=args.mask_threshold,
                    video_backend=args.video_backend, tracker=tracker_options(args), model=model_options(args),
                    prompts=prompts(args), references=references(args), redetect=args.redetect,
                    realtime=args.realtime, duration=args.duration, live=live)


#: Options whose value is not one setting of the run (prompts and references are written in groups), and the
#: settings whose name differs from the option's.
_GROUPED = {"help", "no_progress", "video", "out", "point", "box", "object_id", "ref_image", "ref_mask"}
_RENAMED = {"reconnect": "live.attempts", "model": "model.name"}
_PATHS = {"mask", "overlay", "rle", "checkpoint"}


def _setting(run, dest: str):
    """The value behind option ``dest`` in a :class:`~vos.runs.TrackRun` (itself, its tracker, model or live
    options)."""
    if dest in _RENAMED:
        return operator.attrgetter(_RENAMED[dest])(run)
    owner = next(o for o in (run, run.tracker, run.model, run.live) if hasattr(o, dest))
    return getattr(owner, dest)


def track_arguments(run, path: Callable[[str], str] = str) -> List[str]:
    """The ``vos track`` arguments that :func:`track_run` turns back into ``run`` (a :class:`~vos.runs.TrackRun`),
    derived from the parser: every option whose setting differs from its default; ``path`` shows each file path
    (e.g. relative to a working folder). Entering objects and per-object PNGs have no option (:class:`InputError`)."""
    from vos.errors import InputError

    if run.entries or run.object_pngs:
        raise InputError("objects entering on later frames and per-object PNGs are set by batch layouts, not by "
                         "vos track options")
    parser = build_parser()
    defaults = track_run(parser.parse_args(["--video", "-", "--out", "-"]))
    args = ["--video", run.video if run.is_live else path(run.video), "--out", path(str(run.out))]
    for obj in run.prompts:
        args += ["--object-id", str(obj.obj_id)]
        args += [a for x, y, label in obj.points for a in ("--point", f"{x!r},{y!r},{label}")]
        args += [] if obj.box is None else ["--box", ",".join(repr(v) for v in obj.box)]
    for ref in run.references:
        args += ["--ref-image", path(ref.image), "--ref-mask", path(ref.mask)]
    for action in parser._actions:
        if action.dest in _GROUPED or _setting(run, action.dest) == _setting(defaults, action.dest):
            continue
        value, flag = _setting(run, action.dest), action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            args.append(flag)
        else:
            args += [flag, path(str(value)) if action.dest in _PATHS else "off" if value is None else str(value)]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vos.runs import ObjectHistory, StopControl, track

    args = build_parser().parse_args(argv)
    run = track_run(args)
    stop = StopControl()
    bar = FrameBar(Path(args.video).name if not run.is_live else args.video, disable=args.no_progress)
    try:
        with stop_on_signals(stop):
            summary = track(run, on_frame=bar, stop=stop, on_retry=lambda event: bar.write(f"warning: {event}"))
    finally:
        bar.close()
    how = "" if summary.stopped == "end" else f" ({summary.stopped})"
    print(f"wrote {summary.written} frame(s) to {args.out}{how}: {summary.frames} complete"
          + (f", overlay {args.overlay}" if args.overlay else "") + (f", RLE {args.rle}" if args.rle else "")
          + (f"; {summary.live.line()}" if summary.live is not None else ""))
    found = ObjectHistory.line_of(summary.objects)
    if found:
        print(found)
    return 0
