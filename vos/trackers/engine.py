"""What a tracking engine is: a method's per-frame computation on a backend, holding no object of its own.

The :class:`~vos.trackers.tracker.Tracker` owns the objects (the object manager: user id ↔ per-object record), the
frame's features (one encoder pass per frame) and the frame index; an engine turns features and per-object states
into outputs. Its per-object state ``S`` is an explicit dataclass that the tracker keeps and hands back:

- ``start(features, index, masks)``: objects ``{id: bool H×W mask}`` given (or found) on frame ``index`` → ``{id:
  (state, output)}``, the output being the engine's view of the given mask on that frame;
- ``step(features, index, states)``: every object started before frame ``index`` → ``{id: output}``, advancing the
  states in place (SAM 2.1's memory window slides; PerSAM's state only changes through ``observe``);
- ``label_map(outputs)``: the frame's ``uint8 H×W`` label map from its outputs, by the method's own overlap rule
  (objects whose output is ``absent`` get no pixel);
- ``observe(states, label_map)``: what the method takes from the frame's final label map (PerSAM: the box prompts of
  the next frame);
- ``save(state)`` / ``load(dict)``: one state as tensors, numbers and strings (``torch.load(weights_only=True)``
  reads it back), ``settings()``: what a saved state depends on, checked by ``check_settings`` when a run resumes.

Engines: :class:`vos.trackers.persam.PersamEngine` (PerSAM / PerSAM-F, SAM family) and
:class:`vos.trackers.sam2.Sam2Engine` (SAM 2.1), built by their method's entry in :mod:`vos.methods`.
"""
from __future__ import annotations

from typing import Dict, Protocol, Tuple, TypeVar

import numpy as np

from vos.trackers.result import ObjectOutput

S = TypeVar("S")


class Engine(Protocol[S]):
    """See the module docstring."""

    method: str

    def start(self, feats, index: int, masks: Dict[int, np.ndarray]) -> Dict[int, Tuple[S, ObjectOutput]]: ...

    def step(self, feats, index: int, states: Dict[int, S]) -> Dict[int, ObjectOutput]: ...

    def label_map(self, outputs: Dict[int, ObjectOutput]) -> np.ndarray: ...

    def observe(self, states: Dict[int, S], label_map: np.ndarray) -> None: ...

    def save(self, state: S) -> dict: ...

    def load(self, saved: dict) -> S: ...

    def settings(self) -> dict: ...

    def check_settings(self, saved: dict) -> None: ...
