#!/usr/bin/env python
"""Track the objects of a first-frame mask through a video. See ``python tools/track.py --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vos.cli.common import run  # noqa: E402
from vos.cli.track import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
