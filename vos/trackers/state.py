"""The object manager: user ids ↔ internal slots, kept apart from the network and the per-frame loop."""
from __future__ import annotations

from typing import Dict, Generic, Iterator, List, TypeVar

from vos.errors import MaskError

S = TypeVar("S")


class ObjectManager(Generic[S]):
    """Maps user ids (1..255, the DAVIS palette indices) to per-object states, kept in ascending id order (the slot
    order: it decides ties in overlap resolution, the lower id winning as the reference's lower object index does)."""

    def __init__(self) -> None:
        self._objects: Dict[int, S] = {}

    def check_new(self, obj_id: int) -> None:
        """Raise :class:`MaskError` unless ``obj_id`` is a valid id not tracked yet."""
        if not 1 <= obj_id <= 255:
            raise MaskError(f"object id {obj_id} is outside 1..255 (ids are palette indices)")
        if obj_id in self._objects:
            raise MaskError(f"object id {obj_id} is already tracked; remove it first")

    def add(self, obj_id: int, state: S) -> None:
        self.check_new(obj_id)
        self._objects[obj_id] = state
        self._objects = dict(sorted(self._objects.items()))

    def remove(self, obj_id: int) -> S:
        try:
            return self._objects.pop(obj_id)
        except KeyError:
            raise MaskError(f"object id {obj_id} is not tracked (tracked: {self.ids})") from None

    @property
    def ids(self) -> List[int]:
        return list(self._objects)

    def __iter__(self) -> Iterator[S]:
        return iter(self._objects.values())

    def __len__(self) -> int:
        return len(self._objects)

    def __getitem__(self, obj_id: int) -> S:
        return self._objects[obj_id]

    def __contains__(self, obj_id: int) -> bool:
        return obj_id in self._objects
