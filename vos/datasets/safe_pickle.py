"""Load the benchmarks' annotation pickles (Matcher's LVIS / PACO files, HSNet's COCO-20i lists) without running code.

A pickle is a program: ``GLOBAL``/``STACK_GLOBAL`` import any callable and ``REDUCE``/``BUILD``/``INST``/``OBJ``/
``NEWOBJ`` call it. Before anything is unpickled, every opcode is scanned with :func:`pickletools.genops`:

* plain data opcodes (dicts, lists, tuples, strings, bytes, ints, floats, ``None``, bools) are accepted;
* ``GLOBAL``/``STACK_GLOBAL`` are accepted only when they name one of the few numpy array constructors below
  (or ``_codecs.encode``, which protocols 0-2 use for ``bytes``), and then ``REDUCE``/``BUILD`` may call them;
  every other import is refused, as are ``INST``, ``OBJ``, ``NEWOBJ``, ``NEWOBJ_EX``, ``EXT1/2/4``,
  ``PERSID``/``BINPERSID``, out-of-band buffers and sets;
* numpy arrays and numpy scalars are decoded (annotation files may hold mask arrays) by a restricted unpickler
  whose ``find_class`` can return only wrappers of ``numpy``'s own reconstructors that refuse object dtypes; the
  loaded value is then walked and anything that is not plain data or a non-object numpy array is refused.

Refusals raise :class:`~vos.errors.UnsafePickleError` (a :class:`~vos.errors.DatasetError`) naming the file and
the opcode.
"""
from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from vos.errors import DatasetError, UnsafePickleError

# Opcodes that only build plain data (or move it around the stack and memo).
DATA_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
})
# Opcodes that call what GLOBAL/STACK_GLOBAL imported: allowed only after every import was checked.
CALL_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD"})
_STRING_OPCODES = frozenset({"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING",
                             "SHORT_BINSTRING"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})

_RECONSTRUCT = np.zeros(0).__reduce__()[0]          # numpy's ndarray reconstructor (module moved in numpy 2)
_SCALAR = np.float64(0).__reduce__()[0]             # numpy's scalar reconstructor
_FROMBUFFER_MODULES = ("numpy.core.numeric", "numpy._core.numeric")


def _no_object_dtype(dtype: Any, source: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise UnsafePickleError(f"{source}: refusing a numpy object array (dtype {dtype})")
    return dtype


def _numpy_constructors(source: str) -> Dict[Tuple[str, str], Callable[..., Any]]:
    def reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        if subtype is not np.ndarray:
            raise UnsafePickleError(f"{source}: refusing an ndarray subclass {subtype!r}")
        return _RECONSTRUCT(np.ndarray, shape, typecode)

    def scalar(dtype: Any, data: Any = None) -> np.generic:
        dtype = _no_object_dtype(dtype, source)
        if not isinstance(data, bytes):
            raise UnsafePickleError(f"{source}: numpy scalar without a byte payload")
        return _SCALAR(dtype, data)

    def frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
        dtype = _no_object_dtype(dtype, source)
        array = np.frombuffer(bytes(buffer), dtype=dtype)
        return array.reshape(shape, order="F" if order == "F" else "C").copy(order="K")

    def make_dtype(*args: Any) -> np.dtype:
        return np.dtype(*args)

    def latin1_bytes(text: Any, encoding: Any = None) -> bytes:
        # Protocols 0-2 store bytes as _codecs.encode(text, "latin1").
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError(f"{source}: refusing _codecs.encode other than str → latin-1 bytes")
        return text.encode("latin1")

    table: Dict[Tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): make_dtype, ("_codecs", "encode"): latin1_bytes}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = scalar
    for module in _FROMBUFFER_MODULES:
        table[(module, "_frombuffer")] = frombuffer
    return table


ALLOWED_GLOBALS = frozenset(_numpy_constructors("").keys())


def scan(data: bytes, source: str = "pickle", allow_numpy: bool = True) -> List[str]:
    """Check every opcode of ``data``; return the imported ``module.name`` globals (all numpy constructors).

    Raises :class:`~vos.errors.UnsafePickleError` for any opcode or import outside the accepted set.
    """
    imported: List[str] = []
    memo: Dict[int, Optional[str]] = {}
    recent: List[Optional[str]] = [None, None]    # the last two values pushed, when they are strings
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name not in DATA_OPCODES and not (allow_numpy and name in CALL_OPCODES):
                raise UnsafePickleError(f"{source}: refusing to unpickle: opcode {name} can execute code or build "
                                        f"objects other than plain data")
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                _check_global(module, attr, source)
                imported.append(f"{module}.{attr}")
                recent = [recent[1], None]
            elif name == "STACK_GLOBAL":
                module, attr = recent
                if module is None or attr is None:
                    raise UnsafePickleError(f"{source}: refusing to unpickle: STACK_GLOBAL with a computed name")
                _check_global(module, attr, source)
                imported.append(f"{module}.{attr}")
                recent = [None, None]
            elif name in _STRING_OPCODES:
                recent = [recent[1], arg if isinstance(arg, str) else None]
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[1]
            elif name in _MEMO_PUT:
                memo[int(arg)] = recent[1]
            elif name in _MEMO_GET:
                recent = [recent[1], memo.get(int(arg))]
            elif name not in ("PROTO", "FRAME"):
                recent = [recent[1], None]
    except (ValueError, EOFError) as err:
        raise DatasetError(f"{source}: not a valid pickle ({err})") from err
    return imported


def _check_global(module: str, attr: str, source: str) -> None:
    if (module, attr) not in ALLOWED_GLOBALS:
        raise UnsafePickleError(f"{source}: refusing to unpickle: it imports {module}.{attr} (only plain data and "
                                f"numpy arrays are accepted)")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, source: str):
        super().__init__(file)
        self._source = source
        self._table = _numpy_constructors(source)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._table[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{self._source}: refusing to unpickle: it imports {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refusing a persistent id")


def _check_value(value: Any, source: str) -> None:
    """Walk the unpickled value: only plain data and non-object numpy arrays / scalars may remain."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (bool, int, float, str, bytes, bytearray)):
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (np.ndarray, np.generic)):
            if item.dtype.hasobject:
                raise UnsafePickleError(f"{source}: refusing a numpy object array")
        else:
            raise UnsafePickleError(f"{source}: refusing a value of type {type(item).__name__}")


def loads(data: bytes, source: str = "pickle", allow_numpy: bool = True) -> Any:
    """Unpickle ``data`` after :func:`scan`; numpy arrays only if ``allow_numpy``."""
    scan(data, source, allow_numpy)
    try:
        value = _NumpyOnlyUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as err:  # malformed or truncated data: a dataset problem, not a crash
        raise DatasetError(f"{source}: cannot unpickle ({type(err).__name__}: {err})") from err
    _check_value(value, source)
    return value


def load(path: Union[str, Path], allow_numpy: bool = True) -> Any:
    """Read and safely unpickle the file at ``path`` (see the module docstring for what is accepted)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation pickle not found") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err})") from err
    return loads(data, str(path), allow_numpy)
