#!/usr/bin/env python
"""Track many videos (DAVIS / YouTube-VOS layouts, CSV), locally or on Ray. See ``python tools/batch.py --help``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vos.cli.batch import main  # noqa: E402
from vos.cli.common import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
