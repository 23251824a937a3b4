"""LVOS, SA-V and MOSEv2 evaluation (as their official tools); see ``python tools/eval_vos.py --help``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    from vos.cli.common import run
    from vos.cli.eval_vos import main

    sys.exit(run(main))
