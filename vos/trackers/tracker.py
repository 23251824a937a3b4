"""The frame-streaming multi-object tracker: one encoder pass per frame, every object through one engine step, and
objects with reference photos searched for, found, lost and found again.

``Tracker`` owns the objects (an :class:`~vos.trackers.state.ObjectManager` of :class:`TrackedObject` records), the
frame index and the latest frame's features; the engine of the method (:mod:`vos.trackers.engine`) computes the
tracked objects' outputs, the :class:`~vos.trackers.redetect.Finder` the searched ones' detections.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from vos.errors import InputError, MaskError
from vos.methods import method_for
from vos.models.backend import backend_for, check_image
from vos.trackers.options import TrackerOptions
from vos.trackers.redetect import Finder, ObjectSearch, check_reference_mask, reference_cells
from vos.trackers.result import SEARCHING, TRACKING, FrameResult, ObjectOutput, ObjectStatus
from vos.trackers.state import ObjectManager

@dataclass
class TrackedObject:
    """One object of a tracker: ``engine``: the engine's state while it is tracked (None while it is searched for);
    ``search``: its references and search counters (None for an object without reference, which is only tracked)."""

    engine: Any = None
    search: Optional[ObjectSearch] = None


class Tracker:
    """Follows objects through a stream of frames at constant memory: objects given by a mask on a frame, and
    objects given by reference photos, searched for on every frame until found, then tracked, searched for again
    when lost.

    ``model``: a loaded model of any family (what ``vos.load_model`` returns: a SAM-family ``Sam`` for the paper's
    video mode, a SAM 2 video predictor for SAM 2.1 tracking) or its backend. ``method`` and ``options``: see
    :class:`TrackerOptions` (keyword arguments of the same names also work). ``num_frames``: the video's length when
    known (SAM 2 caps its object pointers at ``min(num_frames, 16)``, as the official predictor does; unknown = 16).

    >>> tracker = Tracker(model)
    >>> first = tracker.add_objects(frame0, label_map)   # uint8 H×W, 0 = background, ids 1..255
    >>> result = tracker.step(frame1)                     # FrameResult: label_map, scores, logits, presence, states
    >>> finder = Tracker(model); finder.add_reference(1, photo, photo_mask)   # then finder.step(frame) for each frame
    """

    def __init__(self, model, method: Optional[str] = None, options: Optional[TrackerOptions] = None,
                 num_frames: Optional[int] = None, **kwargs):
        options = replace(options or TrackerOptions(), **kwargs)
        if method is not None:
            options = replace(options, method=method)
        options.check()
        self.backend = backend_for(model)
        chosen = method_for(self.backend, options.method)
        self.engine = chosen.engine(self.backend, chosen.name, options, num_frames)
        self.options = replace(options, method=chosen.name)
        self.finder = Finder(self.backend, options.find_options())
        self.objects: ObjectManager[TrackedObject] = ObjectManager()
        self.index = -1
        self._last: Optional[Tuple[np.ndarray, Any]] = None   # (frame, features) of the latest frame

    @property
    def method(self) -> str:
        return self.engine.method

    @property
    def object_ids(self) -> List[int]:
        """Every object's id (tracked or searched for), ascending."""
        return self.objects.ids

    def features(self, frame: np.ndarray):
        """The frame's features; the latest frame's are reused (the encoder runs once per frame)."""
        check_image(frame, "frame")
        cached = self._cached(frame)
        if cached is not None:
            return cached
        feats = self.backend.encode(frame)
        self._last = (frame.copy(), feats)
        return feats

    def _cached(self, image: np.ndarray):
        last = self._last
        if last is not None and last[0].shape == image.shape and np.array_equal(last[0], image):
            return last[1]
        return None

    def remember(self, frame: np.ndarray, features) -> None:
        """``features`` of ``frame`` computed elsewhere with this tracker's model (the app encodes the first frame
        when a source opens): used instead of encoding when the next frame is the same picture."""
        check_image(frame, "frame")
        self._last = (frame.copy(), features)

    def forget_frame(self) -> None:
        """Drop the latest frame's features (the next frame is encoded even if it is the same picture)."""
        self._last = None

    # --- objects ------------------------------------------------------------------------------------------------

    def add_reference(self, obj_id: int, image: np.ndarray, mask: np.ndarray) -> None:
        """A photo of object ``obj_id`` (RGB ``uint8 H×W×3`` of any size, from the video or not) and its mask
        (``H×W``, non-zero = the object). Repeatable: the photos of one object are pooled into one target. An object
        that is not tracked is searched for from the next frame on (from frame 0 on a new tracker); a tracked one is
        searched for once it is lost. The photo is encoded once (not at all when it is the latest frame)."""
        obj_id = self.objects.check_id(obj_id)
        check_image(image, f"reference photo of object {obj_id}")
        what = f"the reference mask of object {obj_id}"
        mask = check_reference_mask(mask, image.shape[:2], what)
        feats = self._cached(image)
        feats = feats if feats is not None else self.backend.encode(image)
        record = self.objects.get(obj_id)
        if record is not None and record.search is not None:
            record.search.add_photo(reference_cells(self.backend, feats, mask, what))
            return
        search = self.finder.new_search(feats, mask, what, tracking=record is not None and record.engine is not None)
        if record is None:
            self.objects.add(obj_id, TrackedObject(search=search))
        else:
            record.search = search

    def add_objects(self, frame: np.ndarray, label_map: np.ndarray) -> FrameResult:
        """Start tracking every id of ``label_map`` (``uint8 H×W``, 0 = background) on ``frame``: frame 0 when the
        tracker is new (then the frame is processed: objects with references are searched for on it too), else the
        latest frame. Returns that frame's result; its label map is the given one where the objects are."""
        label_map = np.asarray(label_map)
        ids = [int(i) for i in np.unique(label_map) if i != 0]
        if not ids:
            raise MaskError("the label map has no object (all pixels are 0)")
        self._check_size(label_map, frame, "label map")
        masks = {i: label_map == i for i in ids}
        return self._frame(frame, masks) if self.index < 0 else self._start_on_latest(frame, masks)

    def add_object(self, frame: np.ndarray, obj_id: int, mask: np.ndarray) -> None:
        """Start tracking ``obj_id`` from its ``bool H×W`` mask in ``frame`` (the latest frame, or the first)."""
        masks = self._object_masks(frame, {obj_id: mask})
        if self.index < 0:
            self._frame(frame, masks)
        else:
            self._start_on_latest(frame, masks)

    def remove_object(self, obj_id: int) -> None:
        """Forget ``obj_id`` (its state and references) from the next frame on."""
        self.objects.remove(obj_id)

    def _check_startable(self, masks: Dict[int, np.ndarray]) -> None:
        for obj_id in masks:
            record = self.objects.get(self.objects.check_id(obj_id))
            if record is not None and record.engine is not None:
                raise MaskError(f"object id {obj_id} is already tracked; remove it first")

    def _object_masks(self, frame: np.ndarray, masks: Dict[int, np.ndarray]) -> Dict[int, np.ndarray]:
        """``masks`` as ``bool H×W``, each checked: the frame's size, not empty."""
        checked = {}
        for obj_id, mask in masks.items():
            mask = np.asarray(mask).astype(bool)
            self._check_size(mask, frame, f"mask of object {obj_id}")
            if not mask.any():
                raise MaskError(f"object {obj_id} has an empty mask")
            checked[obj_id] = mask
        return checked

    @staticmethod
    def _check_size(mask: np.ndarray, frame: np.ndarray, what: str) -> None:
        check_image(frame, "frame")
        if mask.shape != frame.shape[:2]:
            raise MaskError(f"{what} is {mask.shape[1]}×{mask.shape[0]} (W×H) but the frame is "
                            f"{frame.shape[1]}×{frame.shape[0]}")

    # --- frames -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, frame: np.ndarray, entering: Optional[Dict[int, np.ndarray]] = None) -> FrameResult:
        """The next frame (RGB ``uint8 H×W×3``): every tracked object tracked onto it, every searched one searched
        for on it, and the ``entering`` objects (``{id: bool H×W mask}``: objects that first appear on this frame,
        as in LVOS and YouTube-VOS) started from their masks in the same pass (one encoder run); their masks are
        drawn over the tracked objects' in the label map."""
        entering = self._object_masks(frame, entering or {})
        if not len(self.objects) and not entering:
            raise InputError("no objects to track: call add_objects(first_frame, label_map) or add_reference(id, "
                             "photo, mask) first")
        return self._frame(frame, entering)

    def _frame(self, frame: np.ndarray, given: Dict[int, np.ndarray]) -> FrameResult:
        """One new frame: track the tracked objects, search the searched ones, start the ``given`` objects and the
        found ones, compose the label map, count absences (losing objects with references)."""
        self._check_startable(given)
        feats = self.features(frame)
        self.index += 1
        tracked = self._tracked()
        outputs = self.engine.step(feats, self.index, tracked) if tracked else {}
        statuses = {i: ObjectStatus(TRACKING) for i in [*tracked, *given]}
        starting = dict(given)
        if given:
            outputs.update(self._start(feats, given))
        for obj_id, record in self.objects.items():
            if record.engine is None and record.search is not None:
                detection = self.finder.detect(feats, record.search)
                found = self.finder.confirmed(record.search, detection) and self._start_found(feats, obj_id,
                                                                                             detection, outputs)
                statuses[obj_id] = ObjectStatus(TRACKING if found else SEARCHING, detection.score, found)
                if found:
                    starting[obj_id] = detection.mask
        tracked_outputs = {i: o for i, o in outputs.items() if i not in starting}
        label_map = (self.engine.label_map(tracked_outputs) if tracked_outputs
                     else np.zeros(frame.shape[:2], np.uint8))
        for obj_id in sorted(starting, reverse=True):   # started objects show their masks; the lower id wins
            label_map[starting[obj_id]] = obj_id
        for obj_id in tracked:
            search = self.objects[obj_id].search
            if search is None:
                continue
            present = bool((label_map == obj_id).any()) and self.finder.verified(feats, search)
            if self.finder.lost(search, present):
                self.objects[obj_id].engine = None
        self.engine.observe(self._tracked(), label_map)
        return self._result(outputs, label_map, statuses)

    def _start_found(self, feats, obj_id: int, detection, outputs: Dict[int, ObjectOutput]) -> bool:
        """Start a found object from its detection's mask; a mask the engine cannot start from (too small for
        PerSAM's target) leaves it searched for."""
        try:
            outputs.update(self._start(feats, {obj_id: detection.mask}))
        except MaskError:
            self.objects[obj_id].search.state = SEARCHING
            return False
        return True

    def _start_on_latest(self, frame: np.ndarray, masks: Dict[int, np.ndarray]) -> FrameResult:
        """Objects given on the latest frame, after it was processed."""
        self._check_startable(masks)
        outputs = self._start(self.features(frame), masks)
        label_map = np.zeros(frame.shape[:2], np.uint8)
        for obj_id in sorted(masks, reverse=True):
            label_map[masks[obj_id]] = obj_id
        self.engine.observe(self._tracked(), label_map)
        return self._result(outputs, label_map, {i: ObjectStatus(TRACKING) for i in masks})

    def _start(self, feats, masks: Dict[int, np.ndarray]) -> Dict[int, ObjectOutput]:
        outputs = {}
        for obj_id, (state, output) in self.engine.start(feats, self.index, masks).items():
            record = self.objects.get(obj_id)
            if record is None:
                record = TrackedObject()
                self.objects.add(obj_id, record)
            record.engine = state
            if record.search is not None:
                record.search.state = TRACKING
            outputs[obj_id] = output
        return outputs

    def _tracked(self) -> Dict[int, Any]:
        return {i: r.engine for i, r in self.objects.items() if r.engine is not None}

    def _result(self, outputs: Dict[int, ObjectOutput], label_map: np.ndarray,
                statuses: Dict[int, ObjectStatus]) -> FrameResult:
        ids = sorted(outputs)
        return FrameResult(self.index, label_map, {i: outputs[i].score for i in ids},
                           {i: outputs[i].logits.float().cpu().numpy() for i in ids},
                           {i: outputs[i].presence for i in ids if outputs[i].presence is not None},
                           dict(sorted(statuses.items())), [i for i in ids if outputs[i].absent])

    # --- resume -------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What resuming needs besides the previous label map (tensors, numbers, strings: loadable with
        ``torch.load(..., weights_only=True)``): the frame index, the engine's settings and every object's engine
        state and search state."""
        objects = {i: {"engine": None if r.engine is None else self.engine.save(r.engine),
                       "search": None if r.search is None else r.search.to_dict()} for i, r in self.objects.items()}
        return {"method": self.method, "index": self.index, "engine": self.engine.settings(), "objects": objects}

    def load_state_dict(self, state: dict, previous_label_map: np.ndarray, index: Optional[int] = None) -> None:
        """Restore :meth:`state_dict`; ``previous_label_map`` is the label map of frame ``index`` (default: the index
        saved in the state), and tracking continues with frame ``index + 1``."""
        if not isinstance(state, dict) or "objects" not in state or "engine" not in state:
            raise InputError("the saved tracker state was written by another vos version: start the run again "
                             "(--overwrite)")
        if state["method"] != self.method:
            raise InputError(f"saved tracker state is for method {state['method']!r}, not {self.method!r}")
        self.engine.check_settings(state["engine"])
        device = self.backend.device
        self.objects = ObjectManager()
        for obj_id, saved in state["objects"].items():
            self.objects.add(int(obj_id), TrackedObject(
                None if saved["engine"] is None else self.engine.load(saved["engine"]),
                None if saved["search"] is None else ObjectSearch.from_dict(saved["search"], device)))
        self.engine.observe(self._tracked(), previous_label_map)
        self.index = int(state["index"] if index is None else index)
        self._last = None
