#!/usr/bin/env python
"""The browser app: see ``vos app --help`` (this script is the same command)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vos.cli.app import main  # noqa: E402
from vos.cli.common import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
