"""Atomic file writes: every output goes to a hidden temporary file beside its target and is renamed over it, so an
interrupted run never leaves a truncated file. Files get the usual permissions (``0o666`` minus the umask)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Callable, Tuple, Union

from PIL import Image

from vos.errors import OutputError


def create_temp(path: Union[str, os.PathLike]) -> Tuple[int, str]:
    """A new hidden file beside ``path`` (unique name, so concurrent writers never share one), created with mode
    ``0o666`` minus the umask; returns its descriptor and path. Raises ``OSError``."""
    path = Path(path)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"))
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


def atomic_write(path: Union[str, os.PathLike], write: Callable[[IO], None], binary: bool = True,
                 fsync: bool = False) -> None:
    """Write ``path`` through ``write(file_object)``; text mode keeps newlines as written. ``fsync``: flush to disk
    before the rename. A failure removes the temporary file and raises :class:`OutputError` naming ``path``."""
    path = Path(path)
    try:
        fd, tmp = create_temp(path)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err})") from None
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise OutputError(f"{path}: cannot write ({err})") from None
        raise


def save_image(path: Union[str, os.PathLike], image: Image.Image, fsync: bool = False, **save_args) -> None:
    """``image.save`` atomically; the format comes from the file extension (``.png``, ``.jpg``, …)."""
    path = Path(path)
    fmt = save_args.pop("format", None) or Image.registered_extensions()[path.suffix.lower()]
    atomic_write(path, lambda handle: image.save(handle, format=fmt, **save_args), fsync=fsync)
