"""DAVIS 2017 semi-supervised evaluation (official J&F); see ``python tools/eval_davis.py --help``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    from vos.cli.common import run
    from vos.cli.eval_davis import main

    sys.exit(run(main))
