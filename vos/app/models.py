"""Models shared by every session of the app: each setting is loaded once and then used read-only (the PerSAM and
SAM 2 engines keep their state outside the model), so two sessions never load or change one model twice."""
from __future__ import annotations

import threading
from typing import Dict

import torch.nn as nn

from vos.runs import ModelOptions


class ModelCache:
    """One loaded model per :class:`~vos.runs.ModelOptions` (name, checkpoint, device, encoder, random weights);
    concurrent requests for the same setting wait for a single load."""

    def __init__(self) -> None:
        self._models: Dict[ModelOptions, nn.Module] = {}
        self._locks: Dict[ModelOptions, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, options: ModelOptions) -> nn.Module:
        """The model of ``options``, loaded on first use (a :class:`~vos.errors.CheckpointError` when it cannot
        be: the same message as on the command line)."""
        with self._guard:
            lock = self._locks.setdefault(options, threading.Lock())
        with lock:
            if options not in self._models:
                self._models[options] = options.load()
            return self._models[options]
