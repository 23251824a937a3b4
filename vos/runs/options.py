"""Typed options of the run layer: which model, how to track, what to track into where."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from vos.errors import CheckpointError, InputError
from vos.io.live import LiveOptions, is_live_source
from vos.io.paths import is_file
from vos.prompts import ObjectPrompt
from vos.trackers.options import TrackerOptions


@dataclass(frozen=True)
class ModelOptions:
    """A model by registry name (``vos.models.MODELS``). ``checkpoint``: a file (default: the official file in the
    cache, downloaded and verified on first use); ``device``: ``cuda`` / ``mps`` / ``cpu`` (default: the best
    available); ``encoder``: ``"fast"`` or ``"stock"`` SAM ViT image encoder (same outputs); ``random_weights``:
    seeded random weights instead of a checkpoint (benchmarks, smoke runs: the masks are meaningless);
    ``precision``: ``"fp32"`` (exact) or ``"bf16"`` (the image encoder in bfloat16, where the device has fast
    bfloat16: :mod:`vos.models.precision`)."""

    name: str = "vit_h"
    checkpoint: Optional[str] = None
    device: Optional[str] = None
    encoder: str = "fast"
    random_weights: bool = False
    precision: str = "fp32"

    def load(self):
        """Build the model (every check of the name, the checkpoint file, its hash and architecture happens here)."""
        from vos.models import load_model

        return load_model(self.name, checkpoint=self.checkpoint, device=self.device, encoder=self.encoder,
                          random_weights=self.random_weights, precision=self.precision)

    def settings(self) -> Dict[str, Any]:
        """What decides the outputs: the name, the weights (``sha256:<hex>`` of a given checkpoint, so that the same
        file given by another path compares equal; ``official`` for the cached official file; ``random``), the
        encoder, the precision; and, for the record only (not compared), the checkpoint's resolved path."""
        from vos.models.checkpoint import file_sha256

        weights, path = ("random" if self.random_weights else "official"), None
        if self.checkpoint is not None and not self.random_weights:
            path = Path(self.checkpoint).expanduser().resolve()
            found = is_file(path, "checkpoint", CheckpointError)
            weights = f"sha256:{file_sha256(path)}" if found else f"missing file {path}"
        return {"model": self.name, "weights": weights, "encoder": self.encoder, "precision": self.precision,
                "checkpoint": None if path is None else str(path)}


@dataclass(frozen=True)
class ReferencePhoto:
    """A photo of objects to find (any size, from the video or not) and its mask: a label-map file whose values are
    the object ids, as in a first-frame mask (palette PNG, grayscale labels, or binary = object 1)."""

    image: str
    mask: str

    def settings(self) -> Dict[str, str]:
        return {"image": _resolved(self.image), "mask": _resolved(self.mask)}


@dataclass(frozen=True)
class ObjectEntry:
    """Objects that first appear on a later frame (LVOS, YouTube-VOS, MOSE): ``frame``, the 0-based index in the
    video where they enter; ``mask``, an annotation of that frame. ``obj_id`` None: the file is a label map (as a
    first-frame mask) and every id in it that is not tracked yet enters; an id: the file is that one object's binary
    mask (non-zero = the object, as SA-V's per-object PNGs)."""

    frame: int
    mask: str
    obj_id: Optional[int] = None

    def settings(self) -> Dict[str, Any]:
        return {"frame": self.frame, "mask": _resolved(self.mask), "obj_id": self.obj_id}


@dataclass(frozen=True)
class TrackRun:
    """One tracking run: the objects of the first frame of ``video`` followed into the run folder ``out``.

    ``video``: a video file, a folder of JPEG/PNG frames, or a live source (a stream URL, ``-`` for standard input,
    ``camera:N``; anything ``vos.io.read_video`` opens). The first frame's objects come from ``mask``, the
    first-frame mask file (DAVIS palette PNG: index = object id; grayscale labels; binary = object 1), or from
    ``prompts`` (clicks and boxes, turned into masks by the model's prompt decoder; :mod:`vos.prompts`).
    ``references``: photos of objects to find (:class:`ReferencePhoto`): each object of a reference is searched for
    from the first frame on, tracked once found, searched for again when lost (``tracker``'s ``detect_threshold``,
    ``lost_after``, ``confirm_frames``); with or without a first-frame mask or prompts for other objects (or for the
    same ones). ``redetect``: the first frame and its objects become references too, so that lost objects are found
    again. ``out``: folder of the per-frame palette PNGs ``00000.png`` … (frame 0 is the given mask),
    ``vos_run.json`` (the settings, and at the end when each object was found and lost), ``vos_states.jsonl`` (one
    line per frame: each object's state, detection score and whether it was found there) and ``vos_state.pt`` (what
    resuming needs); ``overlay``: also an overlay MP4; ``rle``: also COCO RLE JSON Lines. ``max_frames``: stop
    after that many frames (frame 0 included, ≥ 1). ``resume``: continue the run in ``out`` after its last complete
    frame; ``overwrite``: replace the run in ``out`` (the old one is removed only
    once the new one has written its first frame). ``resize_mask``: resize a mask of another size (nearest
    neighbour); ``mask_threshold``: read a soft grayscale mask as object 1 where ``value >= T``;
    ``video_backend``: ``pyav`` / ``decord`` / ``opencv`` (default: PyAV, falling back to OpenCV).
    Live sources: ``realtime`` (skip to the newest frame when tracking falls behind), ``duration`` (stop after that
    many seconds), ``live`` (time-outs and reconnection); they cannot be resumed (a stream cannot be rewound).
    ``entries``: objects that enter on later frames (:class:`ObjectEntry`), each started from its annotation on
    its frame; without a first-frame mask or prompts, frames before the first entering object have no object (and
    are not encoded). ``object_pngs``: also each tracked object's own mask, before the objects are merged, as
    binary PNGs ``out/objects/<id:03d>/<frame:05d>.png`` (overlaps kept, as SA-V scores them).
    """

    video: str
    mask: Optional[str]
    out: Path
    overlay: Optional[Path] = None
    rle: Optional[Path] = None
    max_frames: Optional[int] = None
    resume: bool = False
    overwrite: bool = False
    resize_mask: bool = False
    mask_threshold: Optional[int] = None
    video_backend: Optional[str] = None
    tracker: TrackerOptions = field(default_factory=TrackerOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    prompts: Tuple[ObjectPrompt, ...] = ()
    references: Tuple[ReferencePhoto, ...] = ()
    redetect: bool = False
    realtime: bool = False
    duration: Optional[float] = None
    live: LiveOptions = field(default_factory=LiveOptions)
    entries: Tuple[ObjectEntry, ...] = ()
    object_pngs: bool = False

    @property
    def is_live(self) -> bool:
        return is_live_source(self.video)

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        for name in ("overlay", "rle"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))

    def check(self) -> None:
        """Option values that cannot work (before anything is opened)."""
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"--max-frames must be at least 1 (frame 0 included), got {self.max_frames}")
        if self.resume and self.overwrite:
            raise InputError("--resume and --overwrite exclude each other: continue the run, or replace it")
        if self.mask is not None and self.prompts:
            raise InputError("give the first frame's objects either as a mask file (--mask) or as prompts "
                             "(--point / --box), not both")
        if self.redetect and self.mask is None and not self.prompts:
            raise InputError("--redetect makes the first frame's objects references: give them with --mask or "
                             "--point / --box")
        if self.mask is None and not self.prompts and not self.references and not self.entries:
            raise InputError("nothing to track: give the first frame's objects (--mask, or --point / --box) or "
                             "photos of the objects to find (--ref-image with --ref-mask)")
        first = 0 if self.mask is None and not self.prompts else 1
        for entry in self.entries:
            if entry.frame < first:
                raise InputError(f"{entry.mask}: objects entering on frame {entry.frame}: the frame must be "
                                 f"{'≥ 1 (frame 0 has the first-frame mask)' if first else '≥ 0'}")
            if entry.obj_id is not None and not 1 <= entry.obj_id <= 255:
                raise InputError(f"{entry.mask}: object id {entry.obj_id} is outside 1..255")
        if self.is_live and self.resume:
            raise InputError(f"--resume: {self.video} is a live source, and a stream cannot be rewound: start a new "
                             f"run (another --out, or --overwrite)")
        if self.realtime and not self.is_live:
            raise InputError(f"--realtime is for live sources (stream URLs, '-', cameras); {self.video} is a file "
                             f"or folder, whose frames are all tracked in order")
        if self.duration is not None and not self.duration > 0:
            raise InputError(f"--duration must be a positive number of seconds, got {self.duration}")
        self.tracker.check()
        if self.overlay is not None and self.overlay.suffix.lower() != ".mp4":
            raise InputError(f"--overlay {self.overlay}: the overlay video must be an .mp4 file")
        outputs = [p.resolve() for p in (self.overlay, self.rle) if p is not None]
        if len(set(outputs)) < len(outputs):
            raise InputError(f"--overlay and --rle name the same file {outputs[0]}")

    def settings(self) -> Dict[str, Any]:
        """The settings the outputs depend on (compared on ``resume``): resolved input paths, mask reading, the
        tracker's method and options (not ``decoder_batch``: the masks do not depend on it), the model."""
        return {"video": _resolved(self.video), "mask": None if self.mask is None else _resolved(self.mask),
                "prompts": [asdict(p) for p in self.prompts], "resize_mask": self.resize_mask,
                "mask_threshold": self.mask_threshold, "references": [r.settings() for r in self.references],
                "redetect": self.redetect, "entries": [e.settings() for e in self.entries],
                "object_pngs": self.object_pngs, **tracking_settings(self.tracker, self.model)}


def tracking_settings(tracker: TrackerOptions, model: ModelOptions) -> Dict[str, Any]:
    """The tracker's options that decide the masks (the method resolved for the model; not ``decoder_batch``) and
    the model's settings."""
    from vos.methods import method_for_model_name

    options = tracker.settings()
    options["method"] = method_for_model_name(model.name, tracker.method).name
    return {**options, **model.settings()}


def _resolved(source: str) -> str:
    """An input path made absolute; live sources (URLs, ``-``, cameras) as given."""
    return source if is_live_source(source) else str(Path(source).expanduser().resolve())
