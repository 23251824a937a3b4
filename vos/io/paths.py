"""Looking at user-given paths without tracebacks: ``Path.exists()`` / ``is_dir()`` / ``is_file()`` raise
``PermissionError`` for a path under a folder the user cannot enter; these helpers raise one of the project's errors
instead, naming the path and the folder that cannot be entered."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Union

from vos.errors import InputError, VosError

PathLike = Union[str, os.PathLike]

#: ``stat`` errors that mean "nothing there" (as ``Path.exists()`` treats them).
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def blocked_folder(path: PathLike) -> Path | None:
    """The first folder on the way to ``path`` that cannot be entered (None when every one can)."""
    path = Path(path)
    for entry in [*reversed(path.parents), path]:
        try:
            os.stat(entry)
        except PermissionError:
            return entry.parent
        except OSError:
            return None
    return None


def unreachable(path: PathLike, what: str, err: OSError) -> str:
    """The one-line message for ``err`` raised while looking at ``path`` (``what`` says what the path is for)."""
    if isinstance(err, PermissionError):
        blocked = blocked_folder(path)
        where = f": cannot enter the folder {blocked}" if blocked is not None else ""
        return f"{what} {path}: permission denied{where}"
    return f"{what} {path}: cannot look at it ({err.strerror or err})"


def kind(path: PathLike, what: str, error: type[VosError] = InputError) -> str | None:
    """``"dir"``, ``"file"``, ``"other"`` or None (nothing there) for ``path``; a path that cannot be looked at
    raises ``error`` naming it (``what``: what the path is for, e.g. ``"output folder"``)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno in _MISSING:
            return None
        raise error(unreachable(path, what, err)) from None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def exists(path: PathLike, what: str, error: type[VosError] = InputError) -> bool:
    """``Path(path).exists()``, raising ``error`` when it cannot be told (see :func:`kind`)."""
    return kind(path, what, error) is not None


def is_dir(path: PathLike, what: str, error: type[VosError] = InputError) -> bool:
    """``Path(path).is_dir()``, raising ``error`` when it cannot be told (see :func:`kind`)."""
    return kind(path, what, error) == "dir"


def is_file(path: PathLike, what: str, error: type[VosError] = InputError) -> bool:
    """``Path(path).is_file()``, raising ``error`` when it cannot be told (see :func:`kind`)."""
    return kind(path, what, error) == "file"
