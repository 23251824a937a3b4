"""The object manager: user ids ↔ per-object records, kept apart from the network and the per-frame loop."""
from __future__ import annotations

from typing import Dict, Generic, Iterator, List, Optional, Tuple, TypeVar

from vos.errors import MaskError

R = TypeVar("R")


class ObjectManager(Generic[R]):
    """Maps user ids (1..255, the DAVIS palette indices) to per-object records, kept in ascending id order (the slot
    order: it decides ties in overlap resolution, the lower id winning as the reference's lower object index does).
    :meth:`check_id` is the one check of an id."""

    def __init__(self) -> None:
        self._objects: Dict[int, R] = {}

    @staticmethod
    def check_id(obj_id: int) -> int:
        """``obj_id`` as an int, or a :class:`MaskError` unless it is an integer in 1..255."""
        if isinstance(obj_id, bool) or not isinstance(obj_id, int) and not hasattr(obj_id, "__index__"):
            raise MaskError(f"object id {obj_id!r} is not an integer")
        if not 1 <= int(obj_id) <= 255:
            raise MaskError(f"object id {obj_id} is outside 1..255 (ids are palette indices)")
        return int(obj_id)

    def add(self, obj_id: int, record: R) -> None:
        obj_id = self.check_id(obj_id)
        if obj_id in self._objects:
            raise MaskError(f"object id {obj_id} already exists; remove it first")
        self._objects[obj_id] = record
        self._objects = dict(sorted(self._objects.items()))

    def remove(self, obj_id: int) -> R:
        try:
            return self._objects.pop(obj_id)
        except KeyError:
            raise MaskError(f"object id {obj_id} is not tracked (objects: {self.ids})") from None

    def get(self, obj_id: int) -> Optional[R]:
        return self._objects.get(obj_id)

    @property
    def ids(self) -> List[int]:
        return list(self._objects)

    def items(self) -> List[Tuple[int, R]]:
        return list(self._objects.items())

    def __iter__(self) -> Iterator[R]:
        return iter(self._objects.values())

    def __len__(self) -> int:
        return len(self._objects)

    def __getitem__(self, obj_id: int) -> R:
        return self._objects[obj_id]

    def __contains__(self, obj_id: int) -> bool:
        return obj_id in self._objects
