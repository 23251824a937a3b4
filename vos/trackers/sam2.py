"""SAM 2.1 streaming tracking: the official ``SAM2VideoPredictor``'s masks with a bounded, constant-size memory.

The official predictor loads the whole video and keeps every frame and every frame's outputs. To track frame t,
SAM 2 reads only the conditioning frame's memory and pointer, the memories of the last ``num_maskmem - 1`` frames
(``memory_temporal_stride_for_eval`` apart) and the pointers of the last ``max_obj_ptrs_in_encoder - 1`` frames.
:class:`Sam2Engine` keeps exactly those, per object, and never a frame; every computation is a call into the official
``sam2`` code (``forward_image``, ``_prepare_backbone_features``, ``_track_step``, ``_encode_memory_in_output``,
``_encode_new_memory``, ``fill_holes_in_mask_scores``, ``_get_orig_video_res_output``; the frame-level
wrappers are in :mod:`vos.models.sam2`).

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
import torch.nn as nn
import torch.nn.functional as F

from vos.errors import InputError, MaskError
from vos.models.sam2 import Sam2Features, encode_frame, fill_holes, video_logits, vision_inputs
from vos.trackers.result import ObjectOutput

_FORMAT = 1
Entry = Dict[str, torch.Tensor]


@dataclass
class _Group:
    """Objects added in one call, tracked as one batch (tensors are B-first, B = ``len(ids)``).

    ``cond``: the conditioning frame's entry; ``recent``: ``{frame index: entry}`` for the tracked frames still in the
    window. An entry holds what ``SAM2Base._prepare_memory_conditioned_features`` reads: ``obj_ptr`` (``B×C``
    float32) and, while the frame is within the memory span, ``maskmem_features`` (``B×C_mem×h×w`` bfloat16).
    """

    ids: List[int]
    cond_index: int
    last: int
    cond: Entry
    recent: Dict[int, Entry] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"ids": list(self.ids), "cond_index": self.cond_index, "last": self.last,
                "cond": _to(self.cond, "cpu"), "recent": {t: _to(e, "cpu") for t, e in self.recent.items()}}

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> "_Group":
        return cls([int(i) for i in d["ids"]], int(d["cond_index"]), int(d["last"]), _to(d["cond"], device),
                   {int(t): _to(e, device) for t, e in d["recent"].items()})

    def drop(self, obj_id: int) -> None:
        keep = torch.tensor([k for k, i in enumerate(self.ids) if i != obj_id])
        self.ids.remove(obj_id)
        self.cond = _select(self.cond, keep)
        self.recent = {t: _select(e, keep) for t, e in self.recent.items()}


def _to(entry: Entry, device) -> Entry:
    return {k: v.to(device) for k, v in entry.items()}


def _select(entry: Entry, keep: torch.Tensor) -> Entry:
    return {k: v.index_select(0, keep.to(v.device)) for k, v in entry.items()}


class Sam2Engine:
    """Tracks objects independently with SAM 2.1 (each object its own memory) on a stream of frames.

    ``model``: a ``SAM2VideoPredictor`` in eval mode (what ``vos.models.sam2.load_sam2`` returns). ``num_frames``:
    the stream length if known (see the module docstring). ``batch_objects``: False (default) runs one object at a
    time, the official predictor's loop, and gives its outputs bit for bit on CPU. True sends the objects added in
    one :meth:`add` call through memory attention, decoder and memory encoder as one batch: not bit-exact (batched
    kernels round differently, bfloat16 memories amplify it: on the test model the logits are 8e-6 off after one
    tracked frame and past 1e-3 from the third on) and not faster on CPU (hiera-tiny at 1024, 3 objects: within
    ±3% of the per-object loop; memory attention, the bulk of the work, costs the same per object batched or
    not), so it is meant for GPUs.

    Use: ``feats = engine.encode(frame)`` once per frame, then :meth:`add` for the objects first given on that frame
    and :meth:`step` for the objects added before it. Frame indices must not decrease.
    """

    method = "sam2"
    #: The memory window moves on with every frame (so a run saves the state after each frame).
    state_changes_every_frame = True

    def __init__(self, model: nn.Module, num_frames: Optional[int] = None, batch_objects: bool = False):
        from sam2.sam2_video_predictor import SAM2VideoPredictor

        if not isinstance(model, SAM2VideoPredictor):
            raise InputError(f"the SAM 2 engine needs a sam2 SAM2VideoPredictor (vos.models.sam2.load_sam2), "
                             f"got {type(model).__name__}")
        if model.training:
            raise InputError("the SAM 2 model is in training mode; call model.eval() first")
        if num_frames is not None and num_frames < 1:
            raise InputError(f"num_frames must be a positive frame count or None, got {num_frames}")
        self.model = model
        self.num_frames = num_frames
        self.batch_objects = batch_objects
        self._groups: List[_Group] = []
        self._index = -1
        self._pos_enc: Optional[torch.Tensor] = None

    @property
    def ids(self) -> List[int]:
        """Tracked object ids, ascending."""
        return sorted(i for g in self._groups for i in g.ids)

    def encode(self, frame: np.ndarray) -> Sam2Features:
        """The frame's features (:func:`vos.models.sam2.encode_frame`: the official loader's preprocessing)."""
        return encode_frame(self.model, frame)

    def add(self, feats: Sam2Features, index: int, masks: Dict[int, np.ndarray]) -> Dict[int, ObjectOutput]:
        """Start tracking ``masks`` (``{id: bool H×W}``, ids 1..255 not yet tracked) with frame ``index`` as their
        conditioning frame, as ``add_new_mask`` + ``propagate_in_video`` do; returns their outputs on that frame."""
        self._check_index(index)
        if not masks:
            raise MaskError("no mask to add")
        ids = sorted(masks)
        for obj_id in ids:
            self._check_new_id(obj_id)
        inputs = {i: self._mask_input(masks[i], feats.video_size, i) for i in ids}
        batches = [ids] if self.batch_objects else [[i] for i in ids]
        results = [self._condition(feats, index, batch, torch.cat([inputs[i] for i in batch])) for batch in batches]
        self._index = index
        return self._outputs(feats, [i for batch in batches for i in batch], results)

    def step(self, feats: Sam2Features, index: int) -> Dict[int, ObjectOutput]:
        """Track every object added before frame ``index`` onto it (objects added on ``index`` itself got their
        output from :meth:`add`); returns ``{id: output}`` in ascending id order."""
        self._check_index(index)
        pending = [g for g in self._groups if g.last < index]
        if self._groups and not pending:
            raise InputError(f"frame {index} was already tracked for every object")
        results = [self._track(feats, index, g) for g in pending]
        self._index = index
        return self._outputs(feats, [i for g in pending for i in g.ids], results) if pending else {}

    def remove(self, obj_id: int) -> None:
        """Stop tracking ``obj_id`` and free its memory (the other objects are not affected)."""
        group = next((g for g in self._groups if obj_id in g.ids), None)
        if group is None:
            raise MaskError(f"object id {obj_id} is not tracked (tracked: {self.ids})")
        if len(group.ids) == 1:
            self._groups.remove(group)
        else:
            group.drop(obj_id)

    def label_map(self, outputs: Dict[int, ObjectOutput]) -> np.ndarray:
        """:func:`compose_label_map` of one frame's outputs."""
        return compose_label_map(outputs)

    def observe(self, label_map: np.ndarray) -> None:
        """Nothing: SAM 2 tracks from its own memory, not from the previous label map."""

    def state_dict(self) -> dict:
        """The whole tracking state (the bounded window): ints, lists, dicts and CPU tensors only, so
        ``torch.load(..., weights_only=True)`` reads it back."""
        return {"format": _FORMAT, "image_size": int(self.model.image_size),
                "num_frames": -1 if self.num_frames is None else self.num_frames, "index": self._index,
                "groups": [g.to_dict() for g in self._groups]}

    def load_state_dict(self, state: dict, previous_label_map: Optional[np.ndarray] = None) -> None:
        """Continue from :meth:`state_dict` (same model configuration and ``num_frames``). ``previous_label_map``
        is not needed (SAM 2's memory is in the state) and is ignored."""
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise InputError("not a SAM 2 engine state (missing or unknown 'format')")
        if state["image_size"] != self.model.image_size:
            raise InputError(f"the state was made at image_size {state['image_size']}, this model uses "
                             f"{self.model.image_size}")
        saved = None if state["num_frames"] == -1 else state["num_frames"]
        if saved != self.num_frames:
            raise InputError(f"the state was made with num_frames={saved}, this engine has {self.num_frames}")
        self._groups = [_Group.from_dict(g, self.model.device) for g in state["groups"]]
        self._index = int(state["index"])

    # --- one batch of objects through the official SAM 2 code -------------------------------------------------

    def _condition(self, feats: Sam2Features, index: int, ids: List[int], inputs: torch.Tensor):
        """The conditioning frame: the mask as output (``_use_mask_as_output`` inside ``_track_step``), then its
        memory from the hole-filled low-res mask upsampled, binarised as a prompt (``propagate_in_video_preflight``)."""
        size = self.model.image_size
        with torch.inference_mode():
            vision, pos, sizes = vision_inputs(self.model, feats, len(ids))
            _, sam_out, _, _ = self.model._track_step(
                frame_idx=index, is_init_cond_frame=True, current_vision_feats=vision, current_vision_pos_embeds=pos,
                feat_sizes=sizes, point_inputs=None, mask_inputs=inputs, output_dict=_empty_output_dict(),
                num_frames=self._length(), track_in_reverse=False, prev_sam_mask_logits=None)
            _, _, ious, low_res, _, obj_ptr, presence = sam_out
            pred = fill_holes(self.model, low_res)
            high_res = F.interpolate(pred, size=(size, size), mode="bilinear", align_corners=False)
            memory, _ = self.model._encode_new_memory(vision, sizes, high_res, presence, is_mask_from_pts=True)
        self._groups.append(_Group(ids, index, index, _entry(obj_ptr, memory)))
        return pred, ious, presence

    def _track(self, feats: Sam2Features, index: int, group: _Group):
        """A tracked frame: ``_track_step`` on the group's window, then ``_encode_memory_in_output`` (as
        ``track_step`` does), then the window slides."""
        with torch.inference_mode():
            vision, pos, sizes = vision_inputs(self.model, feats, len(group.ids))
            out, sam_out, _, _ = self.model._track_step(
                frame_idx=index, is_init_cond_frame=False, current_vision_feats=vision,
                current_vision_pos_embeds=pos, feat_sizes=sizes, point_inputs=None, mask_inputs=None,
                output_dict=self._output_dict(group), num_frames=self._length(), track_in_reverse=False,
                prev_sam_mask_logits=None)
            _, _, ious, low_res, high_res, obj_ptr, presence = sam_out
            self.model._encode_memory_in_output(vision, sizes, None, True, high_res, presence, out)
            group.recent[index] = _entry(obj_ptr, out["maskmem_features"])
            group.last = index
            self._slide(group, index + 1)
            return fill_holes(self.model, low_res), ious, presence

    def _outputs(self, feats: Sam2Features, ids: List[int], results) -> Dict[int, ObjectOutput]:
        """Video-resolution outputs of all the frame's objects at once, in the order they were added (as the
        predictor resizes them; its ``non_overlap_masks``, off by default, would apply across them)."""
        pred, ious, presence = (torch.cat(parts) for parts in zip(*results))
        video = video_logits(self.model, pred, feats.video_size)
        scores = ious.max(dim=-1).values
        outputs = {i: ObjectOutput(video[k, 0], float(scores[k]), float(presence[k, 0])) for k, i in enumerate(ids)}
        return dict(sorted(outputs.items()))

    # --- helpers ----------------------------------------------------------------------------------------------

    def _output_dict(self, group: _Group) -> dict:
        """The group's window in the layout ``_prepare_memory_conditioned_features`` reads, with the constant
        memory position encoding expanded to the batch (as ``_get_maskmem_pos_enc`` caches it)."""
        pos = [self._memory_pos_enc().expand(len(group.ids), -1, -1, -1)]
        return {"cond_frame_outputs": {group.cond_index: {**group.cond, "maskmem_pos_enc": pos}},
                "non_cond_frame_outputs": {t: {**e, "maskmem_pos_enc": pos} for t, e in group.recent.items()}}

    def _memory_pos_enc(self) -> torch.Tensor:
        """``1×C_mem×h×w``: the memory encoder's position encoding (it depends on the memory size only)."""
        if self._pos_enc is None:
            side = self.model.sam_image_embedding_size
            blank = torch.zeros(1, self.model.mem_dim, side, side, device=self.model.device)
            with torch.inference_mode():
                self._pos_enc = self.model.memory_encoder.position_encoding(blank).clone()
        return self._pos_enc

    def _slide(self, group: _Group, upcoming: int) -> None:
        """Keep what frame ``upcoming`` and later can read: pointers of the last ``min(num_frames, 16) - 1`` frames,
        memories of the frames ``_prepare_memory_conditioned_features`` picks (``1 + (num_maskmem - 2) * stride``
        back at most)."""
        model = self.model
        ptr_span = min(self._length(), model.max_obj_ptrs_in_encoder) - 1 if model.use_obj_ptrs_in_encoder else 0
        mem_span = 1 + max(model.num_maskmem - 2, 0) * model.memory_temporal_stride_for_eval
        mem_span = mem_span if model.num_maskmem > 1 else 0
        for t in list(group.recent):
            if t < upcoming - max(ptr_span, mem_span):
                del group.recent[t]
            elif t < upcoming - mem_span:
                group.recent[t].pop("maskmem_features", None)

    def _length(self) -> int:
        return self.num_frames if self.num_frames is not None else sys.maxsize

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise InputError(f"frame index must be a non-negative int, got {index!r}")
        if self.num_frames is not None and index >= self.num_frames:
            raise InputError(f"frame index {index} is past the stream length num_frames={self.num_frames}")
        if index < self._index:
            raise InputError(f"frame index {index} comes after frame {self._index}: frames must be given in order")

    def _check_new_id(self, obj_id: int) -> None:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 1 <= obj_id <= 255:
            raise MaskError(f"object id {obj_id!r} is outside 1..255 (ids are palette indices)")
        if obj_id in self.ids:
            raise MaskError(f"object id {obj_id} is already tracked; remove it first")

    def _mask_input(self, mask: np.ndarray, video_size: Tuple[int, int], obj_id: int) -> torch.Tensor:
        """``1×1×S×S`` float mask prompt, resized as ``add_new_mask`` does (bilinear, antialias, ``>= 0.5``)."""
        if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.shape != tuple(video_size):
            raise MaskError(f"mask of object {obj_id} must be a bool array of the frame's size {tuple(video_size)}, "
                            f"got {getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}")
        if not mask.any():
            raise MaskError(f"mask of object {obj_id} is empty")
        size = self.model.image_size
        prompt = torch.from_numpy(mask)[None, None].float().to(self.model.device)
        if prompt.shape[-2:] != (size, size):
            prompt = F.interpolate(prompt, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            prompt = (prompt >= 0.5).float()
        return prompt


def _empty_output_dict() -> dict:
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


def _entry(obj_ptr: torch.Tensor, memory: Optional[torch.Tensor]) -> Entry:
    """A frame's stored outputs; memories are kept in bfloat16 as the predictor stores them."""
    entry = {"obj_ptr": obj_ptr}
    if memory is not None:
        entry["maskmem_features"] = memory.to(torch.bfloat16)
    return entry


def compose_label_map(outputs: Dict[int, ObjectOutput]) -> np.ndarray:
    """``uint8 H×W`` label map (0 = background) from one frame's outputs, as facebookresearch/sam2
    ``tools/vos_inference.py`` writes DAVIS PNGs: it builds the predictor with ``non_overlap_masks=true``, so each
    pixel keeps only the object with the highest logit (``_apply_non_overlapping_constraints``: ``argmax`` over
    objects, ties to the first, i.e. the lowest id since objects are added in ascending id order), and that object
    gets the pixel if its logit is > 0 (``score_thresh`` 0; ``put_per_obj_mask`` would also let the lower id win
    an overlap). Objects with ``presence <= 0`` get no pixel (``presence`` None counts as present).
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
    absent = torch.tensor([outputs[i].presence is not None and outputs[i].presence <= 0 for i in ids])
    logits[absent] = -torch.inf
    winner = logits.argmax(dim=0)
    best = logits.gather(0, winner[None])[0]
    labels = torch.tensor(ids, dtype=torch.uint8)[winner]
    return torch.where(best > 0, labels, torch.zeros_like(labels)).numpy()
