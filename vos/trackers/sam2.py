"""SAM 2.1 streaming tracking: the official ``SAM2VideoPredictor``'s masks with a bounded, constant-size memory.

The official predictor loads the whole video and keeps every frame and every frame's outputs. To track frame t,
SAM 2 reads only the conditioning frame's memory and pointer, the memories of the last ``num_maskmem - 1`` frames
(``memory_temporal_stride_for_eval`` apart) and the pointers of the last ``max_obj_ptrs_in_encoder - 1`` frames.
:class:`Sam2Engine` keeps exactly those, per object, and never a frame; every computation is a call into the official
``sam2`` code through :class:`vos.models.sam2_backend.Sam2Backend`.

Stream length: SAM 2 caps the pointers at ``min(num_frames, 16)``. With ``num_frames=None`` (unknown length) the
engine uses 16, which is what the official predictor does for every video of at least 16 frames, so its outputs are
the official ones on such videos; for a shorter video pass its length as ``num_frames`` to get the official outputs.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from vos.errors import InputError, MaskError
from vos.models.sam2_backend import Entry, Sam2Backend, Sam2Features, StepOutput
from vos.trackers.result import ObjectOutput

_FORMAT = 2


@dataclass
class Sam2Object:
    """One object's memory window: ``cond``: its conditioning frame's entry (frame ``cond_index``); ``recent``:
    ``{frame index: entry}`` for the tracked frames still in the window; ``last``: the latest frame it was tracked
    on. Entries are batches of one (``1×…`` tensors; :data:`vos.models.sam2_backend.Entry`)."""

    cond_index: int
    last: int
    cond: Entry
    recent: Dict[int, Entry] = field(default_factory=dict)

    def window(self) -> tuple:
        """What decides whether two objects can share a batch: the same frames in their windows."""
        return self.cond_index, tuple((t, tuple(sorted(e))) for t, e in sorted(self.recent.items()))


def _to(entry: Entry, device) -> Entry:
    return {k: v.to(device) for k, v in entry.items()}


def _cat(entries: List[Entry]) -> Entry:
    return {k: torch.cat([e[k] for e in entries]) for k in entries[0]}


def _split(entry: Entry, n: int) -> List[Entry]:
    return [{k: v[i:i + 1] for k, v in entry.items()} for i in range(n)]


class Sam2Engine:
    """Tracks objects independently with SAM 2.1 (each object its own memory) on a stream of frames
    (:mod:`vos.trackers.engine`).

    ``backend``: the :class:`~vos.models.sam2_backend.Sam2Backend` of a ``SAM2VideoPredictor`` in eval mode.
    ``num_frames``: the stream length if known (see the module docstring). ``batch_objects``: False (default) runs
    one object at a time, the official predictor's loop, and gives its outputs bit for bit on CPU. True sends
    objects whose windows hold the same frames (objects started on the same frame) through memory attention,
    decoder and memory encoder as one batch: not bit-exact (batched kernels round differently, bfloat16 memories
    amplify it: on the test model the logits are 8e-6 off after one tracked frame and past 1e-3 from the third on)
    and not faster on CPU (hiera-tiny at 1024, 3 objects: within ±3% of the per-object loop; memory attention, the
    bulk of the work, costs the same per object batched or not), so it is meant for GPUs. ``absence_threshold``
    (beyond the official code, off by default): an object whose object-score logit is below it is reported absent
    (default: at or below 0, as SAM 2 itself decides).
    """

    method = "sam2"

    def __init__(self, backend: Sam2Backend, num_frames: Optional[int] = None, batch_objects: bool = False,
                 absence_threshold: Optional[float] = None):
        if num_frames is not None and num_frames < 1:
            raise InputError(f"num_frames must be a positive frame count or None, got {num_frames}")
        self.backend = backend
        self.num_frames = num_frames
        self.batch_objects = batch_objects
        self.absence_threshold = absence_threshold
        self._index = -1

    def start(self, feats: Sam2Features, index: int, masks: Dict[int, np.ndarray]
              ) -> Dict[int, Tuple[Sam2Object, ObjectOutput]]:
        """Objects ``{id: bool H×W}`` with frame ``index`` as their conditioning frame, as ``add_new_mask`` +
        ``propagate_in_video`` do; returns their states and their outputs on that frame."""
        self._check_index(index)
        if not masks:
            raise MaskError("no mask to add")
        ids = sorted(masks)
        for obj_id in ids:
            if masks[obj_id].shape != feats.original_size:
                raise MaskError(f"mask of object {obj_id} is {masks[obj_id].shape[1]}×{masks[obj_id].shape[0]} (W×H), "
                                f"the frame {feats.original_size[1]}×{feats.original_size[0]}")
        inputs = {i: self.backend.mask_input(masks[i], i) for i in ids}
        batches = [ids] if self.batch_objects else [[i] for i in ids]
        results = [self.backend.condition(feats, index, torch.cat([inputs[i] for i in b]), self._length())
                   for b in batches]
        self._index = index
        outputs = self._outputs(feats, batches, results)
        states = {}
        for batch, result in zip(batches, results):
            for obj_id, entry in zip(batch, _split(result.entry, len(batch))):
                states[obj_id] = Sam2Object(index, index, entry)
        return {i: (states[i], outputs[i]) for i in ids}

    def step(self, feats: Sam2Features, index: int, states: Dict[int, Sam2Object]) -> Dict[int, ObjectOutput]:
        """Track every object of ``states`` (started before frame ``index``) onto frame ``index``; their windows
        slide. Returns ``{id: output}`` in ascending id order."""
        self._check_index(index)
        late = [i for i, s in states.items() if s.last >= index]
        if late:
            raise InputError(f"frame {index} was already tracked for object(s) {late}")
        batches = self._batches(states)
        results = [self._track(feats, index, [states[i] for i in b]) for b in batches]
        self._index = index
        return self._outputs(feats, batches, results)

    def _batches(self, states: Dict[int, Sam2Object]) -> List[List[int]]:
        ids = sorted(states)
        if not self.batch_objects:
            return [[i] for i in ids]
        groups: Dict[tuple, List[int]] = {}
        for obj_id in ids:
            groups.setdefault(states[obj_id].window(), []).append(obj_id)
        return list(groups.values())

    def _track(self, feats: Sam2Features, index: int, objects: List[Sam2Object]) -> StepOutput:
        """One batch of objects with the same window: the backend's tracking step, then each window slides."""
        first = objects[0]
        cond = _cat([o.cond for o in objects])
        recent = {t: _cat([o.recent[t] for o in objects]) for t in first.recent}
        result = self.backend.track(feats, index, (first.cond_index, cond), recent, self._length())
        for obj, entry in zip(objects, _split(result.entry, len(objects))):
            obj.recent[index] = entry
            obj.last = index
            self._slide(obj, index + 1)
        return result

    def _outputs(self, feats: Sam2Features, batches: List[List[int]], results: List[StepOutput]
                 ) -> Dict[int, ObjectOutput]:
        """Video-resolution outputs of all the frame's objects at once (as the predictor resizes them; its
        ``non_overlap_masks``, off by default, would apply across them)."""
        if not batches:
            return {}
        ids = [i for b in batches for i in b]
        video = self.backend.upscale(feats, torch.cat([r.low_res for r in results]))
        scores = torch.cat([r.ious for r in results]).max(dim=-1).values
        presence = torch.cat([r.presence for r in results])[:, 0]
        cut = 0.0 if self.absence_threshold is None else self.absence_threshold
        absent = presence <= cut if self.absence_threshold is None else presence < cut
        outputs = {i: ObjectOutput(video[k, 0], float(scores[k]), float(presence[k]), bool(absent[k]))
                   for k, i in enumerate(ids)}
        return dict(sorted(outputs.items()))

    def label_map(self, outputs: Dict[int, ObjectOutput]) -> np.ndarray:
        """:func:`compose_label_map` of one frame's outputs."""
        return compose_label_map(outputs)

    def observe(self, states: Dict[int, Sam2Object], label_map: np.ndarray) -> None:
        """Nothing: SAM 2 tracks from its own memory, not from the previous label map."""

    def save(self, state: Sam2Object) -> dict:
        """The object's window as CPU tensors and numbers."""
        return {"cond_index": state.cond_index, "last": state.last, "cond": _to(state.cond, "cpu"),
                "recent": {t: _to(e, "cpu") for t, e in state.recent.items()}}

    def load(self, saved: dict) -> Sam2Object:
        device = self.backend.device
        return Sam2Object(int(saved["cond_index"]), int(saved["last"]), _to(saved["cond"], device),
                          {int(t): _to(e, device) for t, e in saved["recent"].items()})

    def settings(self) -> dict:
        return {"method": self.method, "format": _FORMAT, "image_size": self.backend.image_size,
                "num_frames": -1 if self.num_frames is None else self.num_frames}

    def check_settings(self, saved: dict) -> None:
        """The saved windows fit this engine: same format, model input size and stream length."""
        if saved.get("method") != self.method or saved.get("format") != _FORMAT:
            raise InputError("the saved tracker state is not a SAM 2 engine state of this vos version")
        if saved["image_size"] != self.backend.image_size:
            raise InputError(f"the state was made at image_size {saved['image_size']}, this model uses "
                             f"{self.backend.image_size}")
        kept = None if saved["num_frames"] == -1 else saved["num_frames"]
        if kept != self.num_frames:
            raise InputError(f"the state was made with num_frames={kept}, this engine has {self.num_frames}")

    def _slide(self, obj: Sam2Object, upcoming: int) -> None:
        """Keep what frame ``upcoming`` and later can read: pointers of the last ``min(num_frames, 16) - 1`` frames,
        memories of the frames ``_prepare_memory_conditioned_features`` picks."""
        ptr_span, mem_span = self.backend.window_spans(self._length())
        for t in list(obj.recent):
            if t < upcoming - max(ptr_span, mem_span):
                del obj.recent[t]
            elif t < upcoming - mem_span:
                obj.recent[t].pop("maskmem_features", None)

    def _length(self) -> int:
        return self.num_frames if self.num_frames is not None else sys.maxsize

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise InputError(f"frame index must be a non-negative int, got {index!r}")
        if self.num_frames is not None and index >= self.num_frames:
            raise InputError(f"frame index {index} is past the stream length num_frames={self.num_frames}")
        if index < self._index:
            raise InputError(f"frame index {index} comes after frame {self._index}: frames must be given in order")


def compose_label_map(outputs: Dict[int, ObjectOutput]) -> np.ndarray:
    """``uint8 H×W`` label map (0 = background) from one frame's outputs, as facebookresearch/sam2
    ``tools/vos_inference.py`` writes DAVIS PNGs: it builds the predictor with ``non_overlap_masks=true``, so each
    pixel keeps only the object with the highest logit (``_apply_non_overlapping_constraints``: ``argmax`` over
    objects, ties to the first, i.e. the lowest id since objects are added in ascending id order), and that object
    gets the pixel if its logit is > 0 (``score_thresh`` 0; ``put_per_obj_mask`` would also let the lower id win
    an overlap). Objects reported ``absent`` (object score ≤ 0: SAM 2 says the object is not there) get no pixel.
    """
    if not outputs:
        raise InputError("compose_label_map got no object outputs")
    ids = sorted(outputs)
    if not all(isinstance(i, (int, np.integer)) and 1 <= i <= 255 for i in ids):
        raise MaskError(f"object ids must be in 1..255, got {ids}")
    shapes = {tuple(outputs[i].logits.shape) for i in ids}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise InputError(f"object logits must all be H×W of one size, got {sorted(shapes)}")
    logits = torch.stack([outputs[i].logits.detach().float().cpu() for i in ids])
    logits[torch.tensor([outputs[i].absent for i in ids])] = -torch.inf
    winner = logits.argmax(dim=0)
    best = logits.gather(0, winner[None])[0]
    labels = torch.tensor(ids, dtype=torch.uint8)[winner]
    return torch.where(best > 0, labels, torch.zeros_like(labels)).numpy()


def build_engine(backend, options, num_frames: Optional[int]) -> Sam2Engine:
    """The SAM 2.1 engine with ``options`` (:class:`~vos.trackers.TrackerOptions`; the PerSAM-only ones are
    refused)."""
    extra = options.persam_options()
    if extra:
        raise InputError(f"option(s) {', '.join(sorted(extra))} apply to the PerSAM methods, not to sam2")
    return Sam2Engine(backend, num_frames, options.batch_objects, options.absence_threshold)
