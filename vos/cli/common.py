"""Pieces shared by every command-line tool: error handling, model options, progress bars."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from vos.errors import VosError

EXIT_BAD_INPUT = 2


def run(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's ``main``; a :class:`VosError` becomes one line on stderr and exit status 2.

    ``KeyboardInterrupt`` exits with 130 after the tool's own cleanup (outputs are written atomically, so every
    completed frame stays on disk).
    """
    try:
        return int(main(argv) or 0)
    except VosError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def add_model_args(parser: argparse.ArgumentParser, default_model: str = "vit_h") -> None:
    """Add ``--model``, ``--checkpoint``, ``--device``, ``--encoder`` (the options every model-running tool has)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=default_model,
                   help="SAM variant: vit_h, vit_l, vit_b (official SAM), vit_t (MobileSAM), "
                        "hq_vit_h, hq_vit_l, hq_vit_b, hq_vit_t (HQ-SAM, needs the 'hq' extra). Default: %(default)s")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="checkpoint file; default: the official file in $VOS_CACHE (~/.cache/vos), "
                        "downloaded and verified on first use")
    g.add_argument("--device", default=None, help="cuda, mps or cpu (default: cuda if available, else mps, else cpu)")
    g.add_argument("--encoder", choices=("fast", "stock"), default="fast",
                   help="image encoder implementation: 'fast' (fused attention, same weights and outputs) or "
                        "'stock' (segment_anything's own). Default: %(default)s")
    g.add_argument("--random-weights", action="store_true",
                   help="skip the checkpoint and use seeded random weights (benchmarks and smoke tests only: "
                        "the masks are meaningless)")


def model_from_args(args: argparse.Namespace):
    """Build the SAM model the ``add_model_args`` options describe."""
    from vos.models import load_sam

    return load_sam(args.model, checkpoint=args.checkpoint, device=args.device, encoder=args.encoder,
                    random_weights=args.random_weights)
