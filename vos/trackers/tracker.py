"""The frame-streaming multi-object tracker: one encoder pass per frame, every object through one engine step.

``Tracker`` is the loop (frame checks, the frame index, one embedding per frame, the per-frame result); an engine
holds the per-object state and does the per-frame work: :class:`~vos.trackers.persam.PersamEngine` (the paper's
video mode, on SAM-family models) or :class:`~vos.trackers.sam2.Sam2Engine` (SAM 2.1, on SAM 2 models).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from vos.errors import InputError, MaskError
from vos.methods import method_for
from vos.models.backend import check_image
from vos.trackers.result import FrameResult, ObjectOutput


@dataclass(frozen=True)
class TrackerOptions:
    """How a :class:`Tracker` tracks.

    ``method``: ``"persam_f"`` (the default on SAM-family models: PerSAM-F weights fitted per object on the frame it
    is added on, ``fit_iterations`` steps) or ``"persam"`` (training-free); ``"sam2"`` (the default and only method on
    SAM 2 models). The other options apply to the PerSAM methods and go beyond the paper (off by default):
    ``absence_threshold``: an object whose best final logit is below this value is reported absent in that frame;
    ``refind_lost``: an object absent from the previous label map is searched again with its location prior (top-k
    points, no box) instead of staying lost as in the paper; ``reproduce_reference_quirks``: training-free mode picks
    pass A's "largest" mask by area modulo 256 as the reference code does (needed only to reproduce its outputs bit
    for bit). ``decoder_batch``: prompts per decoder call (speed only: the masks do not depend on it; default 1 on
    CPU, 16 on GPU).
    """

    method: Optional[str] = None
    decoder_batch: Optional[int] = None
    absence_threshold: Optional[float] = None
    refind_lost: bool = False
    reproduce_reference_quirks: bool = False
    fit_iterations: int = 800

    def persam_options(self) -> Dict[str, Any]:
        """The options that only the PerSAM methods take, with the values that differ from the defaults."""
        default = TrackerOptions()
        return {k: v for k, v in asdict(self).items() if k != "method" and v != getattr(default, k)}


def make_engine(model, options: TrackerOptions, num_frames: Optional[int] = None):
    """The engine of ``options.method`` (or the model family's default) on ``model``."""
    method = method_for(model, options.method)
    if method.name == "sam2":
        extra = options.persam_options()
        if extra:
            raise InputError(f"option(s) {', '.join(sorted(extra))} apply to the PerSAM methods, not to sam2")
        from vos.trackers.sam2 import Sam2Engine

        return Sam2Engine(model, num_frames=num_frames)
    from vos.models.backend import sam_backend
    from vos.persam.video import VideoConfig
    from vos.trackers.persam import PersamEngine

    config = VideoConfig(method=method.name, reproduce_reference_quirks=options.reproduce_reference_quirks,
                         fit_iterations=options.fit_iterations)
    return PersamEngine(sam_backend(model), config, options.decoder_batch, options.absence_threshold,
                        options.refind_lost)


class Tracker:
    """Follows every object of a first-frame label map through a stream of frames, at constant memory.

    ``model``: a SAM-family model (``segment_anything`` / ``segment_anything_hq`` ``Sam``, or what
    ``vos.load_sam`` returns) for the paper's video mode, or a SAM 2 model (``vos.load_sam2``, or
    ``sam2.build_sam.build_sam2_video_predictor(...)``) for SAM 2.1 tracking. ``method`` and ``options``: see
    :class:`TrackerOptions` (keyword arguments of the same names also work). ``num_frames``: the video's length
    when known (SAM 2 caps its object pointers at ``min(num_frames, 16)``, as the official predictor does; unknown =
    16).

    >>> tracker = Tracker(model)
    >>> first = tracker.add_objects(frame0, label_map)   # uint8 H×W, 0 = background, ids 1..255
    >>> result = tracker.step(frame1)                     # FrameResult: label_map, scores, logits, presence
    """

    def __init__(self, model, method: Optional[str] = None, options: Optional[TrackerOptions] = None,
                 num_frames: Optional[int] = None, **kwargs):
        options = replace(options or TrackerOptions(), **kwargs)
        if method is not None:
            options = replace(options, method=method)
        self.engine = make_engine(model, options, num_frames)
        self.options = replace(options, method=self.engine.method)
        self.index = -1
        self._last: Optional[Tuple[np.ndarray, Any]] = None   # (frame, features) of the latest frame

    @property
    def method(self) -> str:
        return self.engine.method

    @property
    def object_ids(self) -> List[int]:
        return self.engine.ids

    def features(self, frame: np.ndarray):
        """The frame's features; the latest frame's are reused (the encoder runs once per frame)."""
        check_image(frame, "frame")
        if self._last is not None and self._last[0].shape == frame.shape and np.array_equal(self._last[0], frame):
            return self._last[1]
        feats = self.engine.encode(frame)
        self._last = (frame.copy(), feats)
        return feats

    def forget_frame(self) -> None:
        """Drop the latest frame's features (the next frame is encoded even if it is the same picture)."""
        self._last = None

    def add_objects(self, frame: np.ndarray, label_map: np.ndarray) -> FrameResult:
        """Start tracking every id of ``label_map`` (``uint8 H×W``, 0 = background) on ``frame`` (frame 0 when the
        tracker is new, else the latest frame). Returns that frame's result (its label map is the given one)."""
        label_map = np.asarray(label_map)
        ids = [int(i) for i in np.unique(label_map) if i != 0]
        if not ids:
            raise MaskError("the label map has no object (all pixels are 0)")
        self._check_size(label_map, frame, "label map")
        outputs = self._add(frame, {i: label_map == i for i in ids})
        return self._result(outputs, label_map.astype(np.uint8))

    def add_object(self, frame: np.ndarray, obj_id: int, mask: np.ndarray) -> None:
        """Start tracking ``obj_id`` from its ``bool H×W`` mask in ``frame`` (the latest frame, or the first)."""
        mask = np.asarray(mask).astype(bool)
        self._check_size(mask, frame, f"mask of object {obj_id}")
        if not mask.any():
            raise MaskError(f"object {obj_id} has an empty mask")
        self._add(frame, {obj_id: mask})

    def _add(self, frame: np.ndarray, masks: Dict[int, np.ndarray]) -> Dict[int, ObjectOutput]:
        feats = self.features(frame)
        self.index = max(self.index, 0)
        return self.engine.add(feats, self.index, masks)

    @staticmethod
    def _check_size(mask: np.ndarray, frame: np.ndarray, what: str) -> None:
        check_image(frame, "frame")
        if mask.shape != frame.shape[:2]:
            raise MaskError(f"{what} is {mask.shape[1]}×{mask.shape[0]} (W×H) but the frame is "
                            f"{frame.shape[1]}×{frame.shape[0]}")

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking ``obj_id`` (from the next frame on)."""
        self.engine.remove(obj_id)

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> FrameResult:
        """Track every object into the next frame (RGB ``uint8 H×W×3``)."""
        if not self.engine.ids:
            raise InputError("no objects to track: call add_objects(first_frame, label_map) first")
        feats = self.features(frame)
        self.index += 1
        outputs = self.engine.step(feats, self.index)
        label_map = self.engine.label_map(outputs)
        self.engine.observe(label_map)
        return self._result(outputs, label_map)

    def _result(self, outputs: Dict[int, ObjectOutput], label_map: np.ndarray) -> FrameResult:
        ids = sorted(outputs)
        return FrameResult(self.index, label_map, {i: outputs[i].score for i in ids},
                           {i: outputs[i].logits.float().cpu().numpy() for i in ids},
                           {i: outputs[i].presence for i in ids if outputs[i].presence is not None})

    def state_dict(self) -> dict:
        """What resuming needs besides the previous label map (tensors, numbers, strings: loadable with
        ``torch.load(..., weights_only=True)``)."""
        return {"method": self.method, "index": self.index, "engine": self.engine.state_dict()}

    def load_state_dict(self, state: dict, previous_label_map: np.ndarray, index: Optional[int] = None) -> None:
        """Restore :meth:`state_dict`; ``previous_label_map`` is the label map of frame ``index`` (default: the index
        saved in the state), and tracking continues with frame ``index + 1``."""
        if state["method"] != self.method:
            raise InputError(f"saved tracker state is for method {state['method']!r}, not {self.method!r}")
        self.engine.load_state_dict(state["engine"], previous_label_map)
        self.index = int(state["index"] if index is None else index)
        self._last = None
