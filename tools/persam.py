#!/usr/bin/env python
"""Personalise SAM on one image + mask and segment a folder of photos. See ``python tools/persam.py --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vos.cli.common import run  # noqa: E402
from vos.cli.persam import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
