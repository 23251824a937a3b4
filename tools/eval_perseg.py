"""PerSAM / PerSAM-F on PerSeg: pooled mIoU, mAcc and bIoU; see ``python tools/eval_perseg.py --help``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    from vos.cli.common import run
    from vos.cli.eval_perseg import main

    sys.exit(run(main))
