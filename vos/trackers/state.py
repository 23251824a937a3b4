"""Per-object state and the object manager (user id ↔ internal slot), kept apart from the network and the loop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from vos.errors import MaskError


@dataclass
class ObjectState:
    """Everything the tracker knows about one object.

    ``target``: unit max+mean reference vector ``1×C`` (from the frame the object was added on, never updated, as in
    the paper); ``weights``: PerSAM-F mixture ``(3,)`` (``None`` for training-free PerSAM); ``box``: tight box
    ``[x0, y0, x1, y1]`` of the object in the previous label map (pixels, inclusive), ``None`` when it is absent there.
    """

    obj_id: int
    target: torch.Tensor
    weights: Optional[torch.Tensor]
    box: Optional[np.ndarray]
    added_at: int

    def to_dict(self) -> dict:
        """Plain tensors and numbers (loadable with ``torch.load(..., weights_only=True)``)."""
        return {"obj_id": self.obj_id, "target": self.target.cpu(), "added_at": self.added_at,
                "weights": None if self.weights is None else self.weights.cpu(),
                "box": None if self.box is None else torch.as_tensor(self.box)}

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> "ObjectState":
        return cls(int(d["obj_id"]), d["target"].to(device),
                   None if d["weights"] is None else d["weights"].to(device),
                   None if d["box"] is None else d["box"].numpy(), int(d["added_at"]))


class ObjectManager:
    """Maps user ids (1..255, the DAVIS palette indices) to internal slots in ascending id order.

    Slot order decides ties in overlap resolution (the lower id wins, as the reference's lower object index does).
    """

    def __init__(self) -> None:
        self._objects: Dict[int, ObjectState] = {}

    def add(self, state: ObjectState) -> None:
        if not 1 <= state.obj_id <= 255:
            raise MaskError(f"object id {state.obj_id} is outside 1..255 (ids are palette indices)")
        if state.obj_id in self._objects:
            raise MaskError(f"object id {state.obj_id} is already tracked; remove it first")
        self._objects[state.obj_id] = state
        self._objects = dict(sorted(self._objects.items()))

    def remove(self, obj_id: int) -> ObjectState:
        try:
            return self._objects.pop(obj_id)
        except KeyError:
            raise MaskError(f"object id {obj_id} is not tracked (tracked: {self.ids})") from None

    @property
    def ids(self) -> List[int]:
        return list(self._objects)

    def __iter__(self) -> Iterator[ObjectState]:
        return iter(self._objects.values())

    def __len__(self) -> int:
        return len(self._objects)

    def __getitem__(self, obj_id: int) -> ObjectState:
        return self._objects[obj_id]
