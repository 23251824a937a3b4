"""Run folders: one settings file (``vos_run.json``) guards every kind of output folder, and nothing already written
is lost.

A run first *plans* (every check, nothing written): the folder is not a file, it can be written, and what it holds
fits the request (a new run needs an empty or missing folder; resuming needs a run with the same settings;
overwriting moves the old run aside). Then it *starts* (creates the folder or moves the old run aside, writes the
settings file atomically), *commits* once the new run has produced its first output (the old run is deleted), or
*aborts* on failure (the old run is put back, a folder the run created and left empty is removed).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from vos.errors import OutputError
from vos.io.atomic import atomic_write, create_temp
from vos.io.paths import exists, is_dir, is_file, kind
from vos.machine import cpu_info

RUN_FILE = "vos_run.json"
#: Settings recorded but not compared: a newer vos may resume an older run; a checkpoint is compared by its hash
#: (``weights``), not by the path it was given by; ``machine`` is the CPU (model, instruction sets) of the latest
#: process that wrote the run; ``objects`` is what the run found (:meth:`RunFolder.record`).
UNCOMPARED = ("vos_version", "checkpoint", "machine", "objects")
#: Settings that runs of older vos versions did not record, and the value they ran with.
RECORDED_SINCE = {"precision": "fp32", "references": [], "redetect": False, "verify_threshold": None,
                  "entries": [], "object_pngs": False}


def check_writable(path: Path, what: str) -> None:
    """Raise :class:`OutputError` unless a file can be created in folder ``path`` (or, when it does not exist yet,
    in its nearest existing parent): a real write probe, so read-only file systems are caught too."""
    folder = path
    while not exists(folder, what, OutputError):
        if folder.parent == folder:
            break
        folder = folder.parent
    if not is_dir(folder, what, OutputError):
        raise OutputError(f"{what} {path}: {folder} is a file, not a folder")
    try:
        fd, tmp = create_temp(folder / ".vos-write-probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise OutputError(f"{what} {path}: cannot write in {folder} ({err.strerror or err})") from None


def check_output_file(path: Path, what: str) -> None:
    """An output file (overlay, RLE) can be written: not a folder, its folder writable."""
    if is_dir(path, what, OutputError):
        raise OutputError(f"{what} {path} is a folder, not a file")
    check_writable(path.parent, what)


def _holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything (a folder that cannot be listed is an :class:`OutputError`)."""
    try:
        return any(folder.iterdir())
    except OSError as err:
        raise OutputError(f"output folder {folder}: cannot list it ({err.strerror or err})") from None


def settings_changes(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """``["name: old → new", …]`` for every compared setting that differs."""
    keys = [k for k in dict.fromkeys([*old, *new]) if k not in UNCOMPARED]
    old = {**{k: v for k, v in RECORDED_SINCE.items() if k in new}, **old}
    return [f"{k}: {json.dumps(old.get(k))} → {json.dumps(new.get(k))}" for k in keys if old.get(k) != new.get(k)]


def _as_json(settings: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(json.dumps(settings))


@dataclass
class RunFolder:
    """The output folder ``path`` of one run of ``kind`` (``track``, ``davis``, ``perseg``, ``oneshot``, …).

    ``existing``: what to do with a folder that already holds files: ``"refuse"`` (a new run: say how to continue),
    ``"resume"`` (it must hold a run of the same settings), ``"overwrite"`` (replace it) or ``"continue"`` (resume a
    run of the same settings, start one in an empty folder, refuse anything else: the benchmarks' default).
    After :meth:`plan`, ``resuming`` says whether an earlier run continues.
    """

    path: Path
    kind: str
    existing: str = "refuse"
    resuming: bool = False
    _aside: Optional[Path] = field(default=None, repr=False)
    _created: bool = field(default=False, repr=False)

    @property
    def settings_path(self) -> Path:
        return self.path / RUN_FILE

    def read_settings(self) -> Optional[Dict[str, Any]]:
        """The settings file of the run in the folder, or None."""
        if not is_file(self.settings_path, "run settings", OutputError):
            return None
        try:
            return json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise OutputError(f"{self.settings_path}: cannot read the run's settings ({err})") from None

    def plan(self, settings: Dict[str, Any]) -> None:
        """Every check, nothing written: raises :class:`OutputError` naming the folder and what to do."""
        path, settings = self.path, _as_json({"kind": self.kind, **settings})
        found = kind(path, "output folder", OutputError)
        if found not in (None, "dir"):
            raise OutputError(f"{path} is a file, not a folder: choose another output folder")
        check_writable(path, "output folder")
        old = self.read_settings() if found else None
        holds_files = found is not None and _holds_files(path)
        if self.existing == "overwrite" or not holds_files:
            if self.existing == "resume":
                raise OutputError(f"{path}: nothing to resume (no {RUN_FILE}); run without --resume")
            self.resuming = False
            return
        if old is None:
            if self.existing == "resume":
                raise OutputError(f"{path}: nothing to resume (no {RUN_FILE}); run without --resume")
            raise OutputError(f"{path} already holds files that are not a vos run: choose another output folder"
                              + (" or pass --overwrite to replace them" if self.existing == "refuse" else ""))
        if self.existing == "refuse":
            raise OutputError(f"{path} already holds a run: use --resume to continue it or --overwrite to replace it")
        changes = settings_changes(old, settings)
        if changes and self.existing == "resume":
            raise OutputError(f"{path}: cannot resume: the run there used other settings ({'; '.join(changes)}); "
                              f"use another output folder or --overwrite")
        if changes:
            raise OutputError(f"{path} holds another run ({'; '.join(changes)}); use another output folder")
        self.resuming = True

    def start(self, settings: Dict[str, Any]) -> None:
        """Create the folder (or move the run it holds aside, when overwriting) and write the settings file."""
        path = self.path
        try:
            if path.is_dir() and any(path.iterdir()) and not self.resuming:
                self._aside = path.with_name(f".{path.name}.replaced-{secrets.token_hex(4)}")
                os.replace(path, self._aside)
            self._created = not path.is_dir()
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{path}: cannot prepare the output folder ({err})") from None
        record = _as_json({"kind": self.kind, **settings, "machine": cpu_info().to_dict()})
        atomic_write(self.settings_path, lambda f: f.write(json.dumps(record, indent=1) + "\n"), binary=False)

    def record(self, results: Dict[str, Any]) -> None:
        """Add ``results`` (not compared on resume: :data:`UNCOMPARED`) to the settings file, atomically."""
        record = {**(self.read_settings() or {}), **_as_json(results)}
        atomic_write(self.settings_path, lambda f: f.write(json.dumps(record, indent=1) + "\n"), binary=False)

    def commit(self) -> None:
        """The new run has produced its first output: the run it replaces is deleted."""
        if self._aside is not None:
            shutil.rmtree(self._aside, ignore_errors=True)
            self._aside = None

    def abort(self) -> None:
        """The run failed: put a replaced run back; remove the folder if this run created it and wrote nothing but
        its settings."""
        path = self.path
        if self._aside is not None:
            shutil.rmtree(path, ignore_errors=True)
            os.replace(self._aside, path)
            self._aside = None
        elif self._created and path.is_dir() and {p.name for p in path.iterdir()} <= {RUN_FILE}:
            shutil.rmtree(path, ignore_errors=True)
