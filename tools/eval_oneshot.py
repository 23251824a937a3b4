"""PerSAM / PerSAM-F on one-shot benchmarks (FSS-1000, LVIS-92i, PASCAL-Part, PACO-Part, COCO-20i); see
``python tools/eval_oneshot.py --help``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    from vos.cli.common import run
    from vos.cli.eval_oneshot import main

    sys.exit(run(main))
