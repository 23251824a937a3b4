"""The method registry: every command, the tracker and the DreamBooth helper choose a method by name here.

``persam`` and ``persam_f`` (the paper) run on SAM-family models (SAM, MobileSAM, HQ-SAM) and segment still images
as well as videos; ``sam2`` runs on SAM 2.1 models and tracks videos. Each method names the builder of its tracking
engine (:mod:`vos.trackers.engine` says what an engine is); engines are imported on first use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from vos.errors import InputError


def _persam_engine(backend, method: str, options, num_frames: Optional[int]):
    from vos.trackers.persam import build_engine

    return build_engine(backend, method, options)


def _sam2_engine(backend, method: str, options, num_frames: Optional[int]):
    from vos.trackers.sam2 import build_engine

    return build_engine(backend, options, num_frames)


@dataclass(frozen=True)
class Method:
    """A method name, the model family it runs on (a key of :data:`vos.models.families.FAMILIES`), whether it also
    segments still images, a one-line summary (command-line help), and its engine builder
    ``engine(backend, method name, TrackerOptions, num_frames)``."""

    name: str
    family: str
    images: bool
    summary: str
    engine: Callable


METHODS: Dict[str, Method] = {m.name: m for m in [
    Method("persam", "sam", True, "training-free PerSAM (the paper)", _persam_engine),
    Method("persam_f", "sam", True, "PerSAM-F: two mask weights fitted on the reference / first frame (the paper)",
           _persam_engine),
    Method("sam2", "sam2", False, "SAM 2.1 memory tracking: the official predictor's masks at constant memory",
           _sam2_engine),
]}


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name``; an unknown name is an :class:`InputError` listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}: use one of {', '.join(METHODS)}") from None


def _checked(family: str, name: Optional[str], model_name: str) -> Method:
    from vos.models.families import FAMILIES

    default = FAMILIES[family].default_method
    method = get_method(name if name is not None else default)
    if method.family != family:
        raise InputError(f"method {method.name!r} runs on {FAMILIES[method.family].label}, not on {model_name}: "
                         f"choose the method {default!r} or another model")
    return method


def method_for(model, name: Optional[str] = None) -> Method:
    """The method to run on ``model``: ``name`` (checked against the model's family), or the family's default."""
    from vos.models.backend import model_family

    family = model_family(model)
    return _checked(family, name, f"this {family} model")


def method_for_model_name(model_name: str, name: Optional[str] = None) -> Method:
    """:func:`method_for` from a registry model name, without building the model."""
    from vos.models.registry import get_spec

    return _checked(get_spec(model_name).backend, name, f"model {model_name!r}")


def image_engine(name: str, model, **options):
    """A still-image engine (``PerSAM`` or ``PerSAMF``) for ``model``; ``options`` go to its constructor."""
    method = method_for(model, name)
    if not method.images:
        raise InputError(f"method {name!r} tracks videos only; for still images use persam or persam_f")
    from vos.persam import PerSAM, PerSAMF

    return (PerSAMF if name == "persam_f" else PerSAM)(model, **options)
