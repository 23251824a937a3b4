"""``vos persam`` / ``tools/persam.py``: personalise SAM on one reference photo + mask, segment a folder of photos.

For every image of ``--images`` it writes ``<out>/<stem>.png`` (the mask: 8-bit, 255 = object) and
``<out>/<stem>_overlay.jpg`` (the photo with the object tinted and outlined). ``--finetune`` uses PerSAM-F (two mask
weights trained on the reference, 1000 steps); the default is training-free PerSAM.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from vos.cli.common import add_model_args, model_from_args
from vos.errors import InputError
from vos.io import image_files, read_rgb
from vos.io.images import save_mask_and_overlay


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


def read_reference_mask(path: Path) -> np.ndarray:
    """A reference mask file: 3-channel RGB masks are kept as they are (the reference pipeline uses the R channel,
    PerSeg convention R = 128); anything else becomes a 2-D mask, non-zero = object."""
    try:
        with Image.open(path) as im:
            if im.mode == "RGB":
                return np.array(im)
            if im.mode == "P":
                return np.array(im) != 0
            return np.array(im.convert("L")) != 0
    except FileNotFoundError:
        raise InputError(f"reference mask {path} does not exist") from None
    except OSError as err:
        raise InputError(f"reference mask {path} cannot be read as an image: {err}") from None


def list_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist")
    files = image_files(folder)
    if not files:
        raise InputError(f"image folder {folder} has no JPEG/PNG image")
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tqdm import tqdm

    from vos.persam import PerSAM, PerSAMF

    args = build_parser().parse_args(argv)
    ref_image = read_rgb(Path(args.ref_image), "reference image")
    ref_mask = read_reference_mask(Path(args.ref_mask))
    images = list_images(Path(args.images))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = (PerSAMF if args.finetune else PerSAM)(model_from_args(args))
    try:
        engine.set_reference(ref_image, ref_mask)
    except InputError as err:
        raise InputError(f"{args.ref_mask}: {err}") from None
    if args.finetune:
        engine.fit()
    for path in tqdm(images, unit="image", desc="segmenting"):
        image = read_rgb(path, "image")
        result = engine.segment(image)
        save_mask_and_overlay(out, path.stem, image, result.mask)
    print(f"wrote {len(images)} mask(s) and overlay(s) to {out}")
    return 0

