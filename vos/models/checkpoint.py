"""Checkpoint cache, download with verification, and safe loading (``torch.load(..., weights_only=True)``)."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn

from vos.errors import CheckpointError, OutputError
from vos.io.atomic import atomic_write, create_temp
from vos.io.paths import is_file, unreachable
from vos.models.spec import ModelSpec

_VERIFIED_SUFFIX = ".verified"


def cache_dir() -> Path:
    """``$VOS_CACHE`` or ``~/.cache/vos``."""
    return Path(os.environ.get("VOS_CACHE") or Path.home() / ".cache" / "vos")


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 of checkpoint file ``path`` (an unreadable file is a :class:`CheckpointError`)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                digest.update(block)
    except OSError as err:
        raise CheckpointError(unreachable(path, "checkpoint", err)) from None
    return digest.hexdigest()


def _how_to_supply(spec: ModelSpec, target: Path) -> str:
    return (f"download {spec.url} by hand and put it at {target} (or set $VOS_CACHE to its folder), "
            f"or pass --checkpoint PATH / load_sam({spec.name!r}, checkpoint=PATH)"
            + (f"; {spec.supply}" if spec.supply else ""))


def _verify(spec: ModelSpec, path: Path) -> None:
    """Check ``path`` against the spec's sha256 (once; a marker file remembers size and mtime of a verified file)."""
    if spec.sha256 is None:
        return
    try:
        stat = path.stat()
    except OSError as err:
        raise CheckpointError(unreachable(path, "checkpoint", err)) from None
    marker = path.with_name(path.name + _VERIFIED_SUFFIX)
    stamp = f"{spec.sha256} {stat.st_size} {stat.st_mtime_ns}"
    if _read_marker(marker) == stamp:
        return
    actual = file_sha256(path)
    if actual != spec.sha256:
        raise CheckpointError(f"{path}: sha256 {actual} does not match the official {spec.filename} "
                              f"({spec.sha256}); the file is corrupt or another file. Delete it and "
                              + _how_to_supply(spec, path))
    try:
        atomic_write(marker, lambda f: f.write(stamp + "\n"), binary=False)
    except OutputError:
        pass    # a read-only folder: the file is verified again next time


def _read_marker(marker: Path) -> str | None:
    """The stamp in a verification marker file, or None (missing or unreadable: the file is hashed again)."""
    try:
        return marker.read_text().strip()
    except (OSError, ValueError):
        return None


def _download(spec: ModelSpec, target: Path) -> None:
    """Download into a temporary file of this process beside ``target`` with a progress bar; rename it over
    ``target`` only after its hash matches (processes filling one cache at once never share a partial file)."""
    from tqdm import tqdm

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, part = create_temp(target)
    except OSError as err:
        raise CheckpointError(f"cannot write the checkpoint cache {target.parent} ({err}); "
                              + _how_to_supply(spec, target)) from None
    try:
        with urllib.request.urlopen(spec.url, timeout=30) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {spec.filename}") as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        if spec.sha256 is not None and file_sha256(Path(part)) != spec.sha256:
            raise CheckpointError(f"downloaded {spec.filename} does not match its sha256 {spec.sha256}; "
                                  + _how_to_supply(spec, target))
        os.replace(part, target)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise CheckpointError(f"checkpoint {spec.filename} for model {spec.name!r} is not in the cache and could not "
                              f"be downloaded ({reason}); " + _how_to_supply(spec, target)) from None
    finally:
        if os.path.exists(part):
            os.unlink(part)


def resolve_checkpoint(spec: ModelSpec, checkpoint: Optional[str] = None) -> Path:
    """The checkpoint file to load: ``checkpoint`` if given, else the cached official file (downloaded if missing)."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not is_file(path, "checkpoint", CheckpointError):
            raise CheckpointError(f"checkpoint {path} does not exist")
        if spec.sha256 is not None and path.name == spec.filename:
            _verify(spec, path)
        return path
    if spec.url is None:
        raise CheckpointError(f"model {spec.name!r} has no official checkpoint: pass checkpoint=PATH "
                              f"(--checkpoint) or random_weights=True (--random-weights)")
    target = cache_dir() / spec.filename
    if not is_file(target, "cached checkpoint", CheckpointError):
        _download(spec, target)
    _verify(spec, target)
    return target


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` on CPU; anything but a tensor dict is a :class:`CheckpointError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, truncated file, pickled code objects ...
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely: it is not a valid weights-only torch file "
                              f"(corrupt, truncated, or holding Python objects other than tensors; "
                              f"{type(err).__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict (name → tensor)")
    return state


_ENCODER_WIDTH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


_HIERA_WIDTH = {96: "sam2.1_hiera_tiny or _small", 112: "sam2.1_hiera_base_plus", 144: "sam2.1_hiera_large"}


def _guess_architecture(state: Dict[str, torch.Tensor]) -> str:
    hiera = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if hiera is not None:
        return f"a SAM 2 checkpoint ({_HIERA_WIDTH.get(int(hiera.shape[0]), 'an unknown Hiera size')})"
    width = state.get("image_encoder.patch_embed.proj.weight")
    base = _ENCODER_WIDTH.get(int(width.shape[0])) if width is not None else None
    if base is None and any(k.startswith("image_encoder.layers.") for k in state):
        base = "vit_t"
    if base is None:
        return "an unknown architecture"
    hq = any(".hf_token." in k or k.startswith("mask_decoder.hf_") for k in state)
    return f"a {'hq_' if hq else ''}{base} checkpoint"


def load_weights(model: nn.Module, spec: ModelSpec, path: Path) -> None:
    """Load ``path`` into ``model`` strictly; a mismatch names the model and what the file looks like."""
    state = read_state_dict(path)
    _check_shapes(model, spec, path, state)
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit model {spec.name!r} (it looks like {_guess_architecture(state)}): "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:2]})")


def _check_shapes(model: nn.Module, spec: ModelSpec, path: Path, state: Dict[str, torch.Tensor]) -> None:
    """Raise a clear error when tensor shapes differ (``load_state_dict`` would raise a long RuntimeError)."""
    own = model.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CheckpointError(
            f"checkpoint {path} does not fit model {spec.name!r} (it looks like {_guess_architecture(state)}): "
            f"{len(bad)} tensors have other shapes, e.g. {bad[0]} {tuple(state[bad[0]].shape)} vs "
            f"{tuple(own[bad[0]].shape)}")
