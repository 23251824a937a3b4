"""The ``vos`` console script: ``vos <command> [options]``; ``vos <command> --help`` explains each command."""
from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import run

COMMANDS = {
    "track": ("vos.cli.track", "track the objects of the first frame (a mask, or clicks) through a video or stream"),
    "persam": ("vos.cli.persam", "personalise SAM on one image + mask, segment a folder of photos"),
    "batch": ("vos.cli.batch", "track many videos (DAVIS / YouTube-VOS layouts, CSV), locally or on Ray"),
    "app": ("vos.cli.app", "the browser app: click the objects, watch them tracked, download the results"),
    "eval-davis": ("vos.cli.eval_davis", "DAVIS 2017 J&F, identical to the official evaluation"),
    "eval-vos": ("vos.cli.eval_vos", "LVOS, SA-V and MOSEv2, scored as their official tools (and tracked end to end)"),
    "eval-perseg": ("vos.cli.eval_perseg", "PerSeg mIoU / bIoU of PerSAM or PerSAM-F"),
    "eval-oneshot": ("vos.cli.eval_oneshot", "one-shot semantic / part segmentation benchmarks"),
    "dreambooth": ("vos.cli.dreambooth", "PerSAM-assisted DreamBooth fine-tuning (diffusers)"),
}


def _usage() -> str:
    lines = ["usage: vos <command> [options]", "       vos --version", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "vos <command> --help shows the options of a command."]
    return "\n".join(lines)


#: The ``pyproject.toml`` of the checkout this package is in (when it is not installed).
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def pyproject_version(path: Path = PYPROJECT) -> str | None:
    """The ``[project]`` version in ``pyproject.toml`` (None when there is none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    project = re.search(r"^\[project\]$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    found = project and re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.MULTILINE)
    return found.group(1) if found else None


def version() -> str:
    """The installed package's version (its metadata); in a checkout that is not installed, pyproject.toml's."""
    try:
        return importlib.metadata.version("vos")
    except importlib.metadata.PackageNotFoundError:
        return pyproject_version() or "unknown"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"vos {version()}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    sys.argv[0] = f"vos {argv[0]}"          # the usage line of parsers that take their name from argv[0]
    return run(module.main, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
