"""Pieces shared by every command-line tool: error handling, model and tracker options, progress, signals."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import Callable, Iterator, Optional, Sequence

from vos.batch import ENGINES
from vos.errors import InputError, VosError
from vos.trackers.options import DEFAULT_DETECT_THRESHOLD, DEFAULT_LOST_AFTER, DEFAULT_VERIFY_THRESHOLD

EXIT_BAD_INPUT = 2


def run(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's ``main``; a :class:`VosError` becomes one line on stderr and exit status 2.

    ``KeyboardInterrupt`` exits with 130 after the tool's own cleanup (outputs are written atomically, so every
    completed frame stays on disk).
    """
    try:
        return int(main(argv) or 0)
    except VosError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _model_names() -> str:
    from vos.models.registry import MODELS

    groups = {"sam": "SAM", "mobile_sam": "MobileSAM", "hq": "HQ-SAM, needs the 'hq' extra",
              "sam2": "SAM 2.1, needs the 'sam2' extra", "test": "a test-size configuration, no official weights"}
    by_family = {}
    for spec in MODELS.values():
        by_family.setdefault(spec.family, []).append(spec.name)
    return "; ".join(f"{', '.join(names)} ({groups.get(family, family)})" for family, names in by_family.items())


def add_model_args(parser: argparse.ArgumentParser, default_model: str = "vit_h") -> None:
    """Add ``--model``, ``--checkpoint``, ``--device``, ``--encoder``, ``--precision``, ``--random-weights``."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=default_model, help=f"model: {_model_names()}. Default: %(default)s")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="checkpoint file; default: the official file in $VOS_CACHE (~/.cache/vos), "
                        "downloaded and verified on first use")
    g.add_argument("--device", default=None, help="cuda, mps or cpu (default: cuda if available, else mps, else cpu)")
    g.add_argument("--encoder", choices=("fast", "stock"), default="fast",
                   help="SAM ViT image encoder implementation: 'fast' (fused attention, same weights and outputs) or "
                        "'stock' (segment_anything's own). Default: %(default)s")
    g.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="image encoder precision: 'fp32' (exact) or 'bf16' (bfloat16 matmuls and attention, "
                        "1.5-1.7x faster measured on a CPU with AVX512-BF16; AMX CPUs and recent GPUs have bfloat16 "
                        "too; embeddings within ~1%%, so a few border pixels may change; refused on hardware without "
                        "bfloat16 dot products). Default: %(default)s")
    g.add_argument("--random-weights", action="store_true",
                   help="skip the checkpoint and use seeded random weights (benchmarks and smoke tests only: "
                        "the masks are meaningless)")


def model_options(args: argparse.Namespace):
    """The :class:`~vos.runs.ModelOptions` of the ``add_model_args`` options."""
    from vos.runs import ModelOptions

    return ModelOptions(args.model, args.checkpoint, args.device, args.encoder, args.random_weights, args.precision)


def add_tracker_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--method`` and the tracker options (the same for ``track``, ``eval-davis --run`` and ``batch``)."""
    from vos.methods import METHODS

    parser.add_argument("--method", choices=tuple(METHODS), default=None,
                        help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values())
                             + ". Default: persam_f on SAM models, sam2 on SAM 2.1 models")
    g = parser.add_argument_group("tracker options (beyond the paper and the official code; off by default)")
    g.add_argument("--absence-threshold", type=float, metavar="L",
                   help="report an object absent in a frame (no pixel) when its best logit (PerSAM) or its "
                        "object-score logit (SAM 2.1; default there: absent at or below 0) is below L")
    g.add_argument("--decoder-batch", type=int, metavar="B",
                   help="PerSAM: prompts per decoder call (speed only; default: 1 on CPU, 16 on GPU)")
    g.add_argument("--refind-lost", action="store_true",
                   help="PerSAM: search for objects that vanished with their location prior (the paper keeps them "
                        "lost)")
    g.add_argument("--reproduce-reference-quirks", action="store_true",
                   help="PerSAM: training-free mode picks the 'largest' first mask by area modulo 256 like the "
                        "reference code")
    g = parser.add_argument_group("finding objects from reference photos (--ref-image / --ref-mask, --redetect)")
    g.add_argument("--detect-threshold", type=float, default=DEFAULT_DETECT_THRESHOLD, metavar="T",
                   help="an object being searched for is found on the first frame whose detection score (in [0, 1]: "
                        "PerSAM's similarity peak times the predicted IoU of its mask) is >= T. Default: %(default)s")
    g.add_argument("--lost-after", type=int, default=DEFAULT_LOST_AFTER, metavar="N",
                   help="an object with references that is reported absent (no pixel) on N consecutive tracked "
                        "frames is searched for again from the next frame. Default: %(default)s")
    g.add_argument("--confirm-frames", type=int, default=1, metavar="K",
                   help="a detection must reach the threshold on K consecutive frames before the object counts as "
                        "found (it is started from the K-th). Default: %(default)s")
    g.add_argument("--verify-threshold", type=threshold_or_off, default=DEFAULT_VERIFY_THRESHOLD, metavar="V",
                   help="while an object with references is tracked, a frame on which their similarity peak on the "
                        "frame (the highest cosine similarity of their target and a cell of the frame's embedding "
                        "grid) is below V counts as absent too, so that --lost-after such frames send it back to "
                        "searching: PerSAM tracking rarely reports an object absent by itself. 'off': only the "
                        "tracker's own absence counts. Default: %(default)s")


def threshold_or_off(text: str) -> Optional[float]:
    """An argparse type: a number, or ``off`` (None)."""
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def tracker_options(args: argparse.Namespace):
    """The :class:`~vos.trackers.TrackerOptions` of the ``add_tracker_args`` options."""
    from vos.trackers import TrackerOptions

    return TrackerOptions(method=args.method, decoder_batch=args.decoder_batch,
                          absence_threshold=args.absence_threshold, refind_lost=args.refind_lost,
                          reproduce_reference_quirks=args.reproduce_reference_quirks,
                          detect_threshold=args.detect_threshold, lost_after=args.lost_after,
                          confirm_frames=args.confirm_frames, verify_threshold=args.verify_threshold)


def add_reference_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--ref-image`` / ``--ref-mask`` (repeatable, paired in order)."""
    g = parser.add_argument_group("objects to find from photos (with or without a first-frame mask)")
    g.add_argument("--ref-image", action="append", default=[], metavar="PHOTO",
                   help="a photo of the objects to find (any size, need not come from the video); repeatable: "
                        "several photos of the same objects are pooled")
    g.add_argument("--ref-mask", action="append", default=[], metavar="MASK",
                   help="the mask of the matching --ref-image (the n-th mask goes with the n-th photo, same size); "
                        "its values are object ids, as in a first-frame mask")


def references(args: argparse.Namespace) -> tuple:
    """The :class:`~vos.runs.options.ReferencePhoto` s of ``add_reference_args``: one mask per photo."""
    from vos.runs.options import ReferencePhoto

    if len(args.ref_image) != len(args.ref_mask):
        raise InputError(f"{len(args.ref_image)} --ref-image but {len(args.ref_mask)} --ref-mask: give one mask per "
                         f"photo (the n-th --ref-mask is the mask of the n-th --ref-image)")
    return tuple(ReferencePhoto(image, mask) for image, mask in zip(args.ref_image, args.ref_mask))


@contextlib.contextmanager
def stop_on_signals(stop) -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) and SIGTERM ask ``stop`` (a :class:`~vos.runs.StopControl`) to end the run
    after the frame in progress; while that frame's outputs are being written the interrupt waits for them."""
    def handler(signum, frame):
        stop.request("interrupted" if signum == signal.SIGINT else "terminated")
        if not stop.writing:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class FrameBar:
    """A tqdm progress bar fed with :class:`~vos.runs.FrameEvent` (frames, fps, objects present; no total when the
    length is unknown), shown from the first frame on (nothing is drawn for a run that fails before it)."""

    def __init__(self, desc: str, disable: bool = False):
        self.desc, self.disable = desc, disable
        self._bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=event.total, unit="frame", desc=self.desc, disable=self.disable)
        if event.result is not None:
            self._bar.set_postfix(fps=f"{1 / max(event.seconds, 1e-9):.3g}", objects=len(event.result.present),
                                  refresh=False)
        self._bar.update(1)

    def write(self, line: str) -> None:
        """A line on stderr that does not break the bar."""
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def add_engine_args(parser: argparse.ArgumentParser, workers: bool = True) -> None:
    """``--engine``, ``--address``, ``--workers`` (unless the tool has its own), ``--cpus-per-worker``,
    ``--gpus-per-worker``, ``--attempts``."""
    g = parser.add_argument_group("tracking engine (the same outputs with either)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: one video after another in this process; ray: Ray actors tracking videos in "
                        "parallel (needs the 'ray' extra). Default: %(default)s")
    g.add_argument("--address", metavar="A",
                   help="Ray: a running cluster (auto, host:port, ray://host:10001; vos installed on its nodes); "
                        "default: start a local cluster on 127.0.0.1 for this run")
    if workers:
        g.add_argument("--workers", type=int, default=None, metavar="N",
                       help="Ray: actors, each tracking one video at a time. Default: 1")
    g.add_argument("--cpus-per-worker", type=float, metavar="C",
                   help="Ray: CPUs reserved by each actor, also its torch threads (default: this machine's cores "
                        "shared out among the workers on a local cluster, 1 on a running one)")
    g.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="Ray: GPUs reserved by each actor, may be a fraction. Default: 0")
    g.add_argument("--attempts", type=int, default=None, metavar="K",
                   help="Ray: actors a video may lose (killed, out of memory) before it is recorded failed; each "
                        "new one resumes it. Default: 3")


def ray_options(args: argparse.Namespace, workers: Optional[int] = None):
    """The :class:`~vos.batch.ray.RayOptions` of the ``add_engine_args`` options (``workers``: the tool's own
    count); Ray options with the local engine are an error."""
    from vos.batch.ray import RayOptions

    given = {"--address": args.address, "--cpus-per-worker": args.cpus_per_worker,
             "--gpus-per-worker": args.gpus_per_worker, "--attempts": args.attempts}
    if workers is None:
        workers, given["--workers"] = args.workers, args.workers
    if args.engine == "local":
        named = [flag for flag, value in given.items() if value is not None]
        if named:
            raise InputError(f"{named[0]} is an option of --engine ray (the local engine tracks one video after "
                             f"another in this process)")
    values = {"address": args.address, "workers": workers, "cpus_per_worker": args.cpus_per_worker,
              "gpus_per_worker": args.gpus_per_worker, "attempts": args.attempts}
    return RayOptions(**{name: value for name, value in values.items() if value is not None})


def add_run_mode(parser: argparse.ArgumentParser, title: str, help: str) -> argparse._ArgumentGroup:
    """An evaluation command's ``--run`` mode (track the benchmark first, then evaluate): the flag in a group
    described by ``title`` (returned, for the mode's own options), then the engine, tracker and model options it
    tracks with."""
    group = parser.add_argument_group(title)
    group.add_argument("--run", action="store_true", help=help)
    add_engine_args(parser, workers=False)
    add_tracker_args(parser)
    add_model_args(parser)
    return group


def print_results(table: str, written: Sequence) -> None:
    """An evaluation's table, then one ``wrote PATH`` line per file written."""
    print(table)
    print()
    for path in written:
        print(f"wrote {path}")
