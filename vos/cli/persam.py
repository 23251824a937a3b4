"""``vos persam`` / ``tools/persam.py``: personalise SAM on one reference photo + mask, segment a folder of photos.

For every image of ``--images`` it writes ``<out>/<stem>.png`` (the mask: 8-bit, 255 = object) and
``<out>/<stem>_overlay.jpg`` (the photo with the object tinted and outlined); ``<out>/vos_run.json`` records the
settings, and a second run with the same settings segments only the photos without results. ``--finetune`` uses
PerSAM-F (two mask weights trained on the reference, 1000 steps); the default is training-free PerSAM.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import add_model_args, model_options


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vos persam", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-image", required=True, help="reference photo (JPEG/PNG)")
    p.add_argument("--ref-mask", required=True,
                   help="reference mask: non-zero pixels = the object (PerSeg annotations, binary or palette PNGs)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of photos to segment")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (masks and overlays)")
    p.add_argument("--finetune", action="store_true", help="PerSAM-F: train the two mask weights first")
    add_model_args(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tqdm import tqdm

    from vos.runs.images import ImageRun, list_images, segment_images

    args = build_parser().parse_args(argv)
    run = ImageRun(Path(args.ref_image), Path(args.ref_mask), Path(args.images), Path(args.out),
                   "persam_f" if args.finetune else "persam", model_options(args))
    with tqdm(total=len(list_images(run.images)), unit="image", desc="segmenting") as bar:
        done = segment_images(run, on_image=lambda path: bar.update(1))
    print(f"wrote {done} mask(s) and overlay(s) to {args.out}")
    return 0
