import os
import sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vos.cli.common import run  # noqa: E402
from vos.cli.dreambooth import main  # noqa: E402
sys.exit(run(main))
