"""``tools/dreambooth.py``: PerSAM-assisted DreamBooth — segment the subject in the instance photos, fine-tune a
Stable Diffusion pipeline on the foreground only, save it as a diffusers folder, optionally render samples."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from vos.cli.common import add_model_args, model_from_args
from vos.dreambooth import masks as M
from vos.dreambooth import train as T
from vos.errors import InputError, MaskError, OutputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="PerSAM-assisted DreamBooth: PerSAM segments the subject in every instance photo from one "
                    "reference mask, and the DreamBooth loss is averaged over the subject's latent pixels only, so "
                    "the identifier does not learn the background. Writes <out>/ as a diffusers "
                    "StableDiffusionPipeline folder, <out>/masks/ (mask PNG + overlay JPEG per photo), "
                    "<out>/samples/ and <out>/dreambooth.json (options and per-step losses). The model options "
                    "choose the SAM used for the masks (not loaded with --mask-dir); --device also runs the "
                    "diffusion models.")
    g = p.add_argument_group("data")
    g.add_argument("--pretrained", required=True, metavar="PATH_OR_NAME",
                   help="Stable Diffusion pipeline to fine-tune: a local diffusers folder (with model_index.json), "
                        "or a hub name owner/model, which is downloaded")
    g.add_argument("--instance-dir", required=True, metavar="DIR",
                   help="folder of the subject's photos (jpg, jpeg, png, bmp, webp), used in file-name order")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--ref-mask", metavar="PNG",
                     help="mask of the subject in ONE photo (--ref-image, default the first); PerSAM segments the "
                          "others. Any non-zero pixel is subject (DAVIS palette, 0/255 grey or PerSeg colour masks)")
    src.add_argument("--mask-dir", metavar="DIR",
                     help="one mask per photo, matched by file stem (dog1.jpg <-> dog1.png); PerSAM is not run")
    g.add_argument("--ref-image", metavar="NAME", default=None,
                   help="file name or stem of the photo --ref-mask belongs to (default: the first photo)")
    g.add_argument("--finetune-persam", action="store_true",
                   help="segment with PerSAM-F (trains 2 mask weights on the reference) instead of PerSAM")
    g.add_argument("--persam-f-iterations", type=int, default=1000, metavar="N",
                   help="AdamW steps of the PerSAM-F weight training (default: %(default)s, the paper's)")
    g.add_argument("--latent-mask", choices=M.LATENT_MASK_MODES, default="soft",
                   help="latent loss weight of each 8x8 (VAE scale factor) pixel cell: 'soft' = fraction of the "
                        "cell covered by the subject, 'binary' = 1 if that fraction is >= 0.5 (default: %(default)s)")
    g.add_argument("--instance-prompt", required=True, metavar="TEXT",
                   help="prompt with the identifier, e.g. 'a photo of sks dog'")
    g = p.add_argument_group("prior preservation (optional)")
    g.add_argument("--class-dir", metavar="DIR", default=None,
                   help="folder of class images (e.g. other dogs); their loss is NOT masked")
    g.add_argument("--class-prompt", metavar="TEXT", default=None, help="prompt of the class images, e.g. 'a photo "
                                                                          "of a dog'")
    g.add_argument("--prior-loss-weight", type=float, default=1.0, metavar="W",
                   help="weight of the class-image loss (default: %(default)s)")
    g.add_argument("--num-class-images", type=int, default=0, metavar="N",
                   help="if --class-dir holds fewer than N images, generate the missing ones into it with the "
                        "pretrained pipeline and --class-prompt (--sample-steps steps) before training")
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, metavar="DIR", help="output folder (the fine-tuned pipeline)")
    g.add_argument("--overwrite", action="store_true", help="replace a pipeline already saved in --out")
    g.add_argument("--steps", type=int, required=True, metavar="N", help="optimizer steps")
    g.add_argument("--lr", type=float, default=5e-6, metavar="LR",
                   help="AdamW learning rate, constant (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="instance photos per step, plus as many class images with prior preservation "
                        "(default: %(default)s)")
    g.add_argument("--resolution", type=int, default=512, metavar="R",
                   help="training size: the centred square of each photo (and of its mask) is resized to RxR; "
                        "must be a multiple of the VAE scale factor (8 for Stable Diffusion) (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the noise, timesteps, photo order and samples (default: %(default)s)")
    g.add_argument("--train-text-encoder", action="store_true", help="also fine-tune the CLIP text encoder")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass (less memory, slower)")
    g.add_argument("--mixed-precision", choices=T.MIXED_PRECISION, default="no",
                   help="autocast precision: fp16 (CUDA only) or bf16 (CUDA or CPU); weights stay float32 "
                        "(default: %(default)s = float32)")
    g.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also save the pipeline to <out>/checkpoint-<step> every N steps (0: only at the end)")
    g = p.add_argument_group("samples")
    g.add_argument("--sample", action="extend", nargs="+", default=[], metavar="PROMPT",
                   help="prompt(s) rendered after training into <out>/samples/ (one image each, RxR)")
    g.add_argument("--sample-steps", type=int, default=25, metavar="N",
                   help="inference steps for samples and class images (default: %(default)s)")
    g.add_argument("--guidance-scale", type=float, default=7.5, metavar="S",
                   help="classifier-free guidance scale for samples and class images (default: %(default)s)")
    add_model_args(p)
    return p


def check_args(args: argparse.Namespace) -> None:
    """Option combinations argparse cannot express."""
    for name in ("steps", "batch_size", "resolution", "sample_steps", "persam_f_iterations"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.save_every < 0 or args.num_class_images < 0:
        raise InputError("--save-every and --num-class-images must not be negative")
    if args.ref_image is not None and args.ref_mask is None:
        raise InputError("--ref-image names the photo of --ref-mask; it has no meaning with --mask-dir")
    if (args.class_dir is None) != (args.class_prompt is None):
        raise InputError("prior preservation needs both --class-dir and --class-prompt")
    if args.num_class_images and args.class_dir is None:
        raise InputError("--num-class-images needs --class-dir and --class-prompt")


def prepare_out(out: Path, pretrained: str, overwrite: bool) -> None:
    """Refuse to overwrite a saved pipeline (or the pretrained one) and create ``out``."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder")
    if Path(pretrained).exists() and out.resolve() == Path(pretrained).resolve():
        raise OutputError(f"--out {out} is the --pretrained folder; choose another output folder")
    if (out / "model_index.json").exists() and not overwrite:
        raise OutputError(f"--out {out} already holds a pipeline (model_index.json); choose another folder or "
                          f"pass --overwrite")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create --out {out}: {err}") from None


def read_masks(items: Sequence[M.InstanceImage], args: argparse.Namespace) -> Optional[int]:
    """Attach the masks given on the command line; returns the reference photo's index (None with --mask-dir)."""
    if args.mask_dir is not None:
        M.masks_from_dir(items, args.mask_dir)
        return None
    return M.read_reference_mask(items, args.ref_mask, args.ref_image)


def segment_others(items: Sequence[M.InstanceImage], ref: int, args: argparse.Namespace) -> None:
    """PerSAM (or PerSAM-F) masks for the photos without one; SAM is freed afterwards."""
    if all(item.mask is not None for item in items):
        return
    sam = model_from_args(args)
    M.segment_with_persam(items, sam, ref, finetune=args.finetune_persam,
                          finetune_iterations=args.persam_f_iterations)
    del sam
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def class_images(pipe, args: argparse.Namespace) -> List[M.InstanceImage]:
    """The class images of --class-dir, after generating the missing ones (--num-class-images)."""
    folder = Path(args.class_dir)
    have = M.list_images(folder, "class") if folder.exists() else []
    missing = args.num_class_images - len(have)
    if missing > 0:
        taken = {p.name for p in have}
        names, i = [], 0
        while len(names) < missing:
            name = f"class-{i:04d}.png"
            if name not in taken:
                names.append(name)
            i += 1
        T.render(pipe, [args.class_prompt] * missing, folder, args.resolution, args.sample_steps,
                 args.guidance_scale, seed=args.seed + 1, names=names, desc="class images")
    return M.load_instance_images(folder, "class")


def latent_masks(items: Sequence[M.InstanceImage], resolution: int, factor: int, mode: str) -> torch.Tensor:
    """Stacked latent weights ``N×1×(R/f)×(R/f)``; a mask that leaves no weight in the training crop is an error."""
    out = []
    for item in items:
        weights = M.latent_mask(item.mask, resolution, factor, mode)
        if not weights.any():
            raise MaskError(f"the mask of {item.path} has no {'latent cell' if mode == 'binary' else 'pixel'} "
                            f"inside the centred square used for training"
                            + (" (try --latent-mask soft)" if mode == "binary" else ""))
        out.append(weights)
    return torch.stack(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    out = Path(args.out)
    from vos.models import default_device

    device = torch.device(args.device) if args.device is not None else default_device()
    T.autocast_dtype(args.mixed_precision, device)
    items = M.load_instance_images(args.instance_dir)
    ref = read_masks(items, args)
    if args.class_dir is not None and args.num_class_images == 0:
        M.load_instance_images(args.class_dir, "class")          # fail early on a bad class folder
    T.check_pretrained(args.pretrained)
    prepare_out(out, args.pretrained, args.overwrite)

    if ref is not None:
        segment_others(items, ref, args)
    M.save_masks(items, out / "masks")

    pipe = T.load_pipeline(args.pretrained, device)
    factor = T.vae_scale_factor(pipe)
    if args.resolution % factor:
        raise InputError(f"--resolution {args.resolution} is not a multiple of the VAE scale factor {factor}")
    weights = latent_masks(items, args.resolution, factor, args.latent_mask)
    pixels = torch.stack([M.image_tensor(item.image, args.resolution) for item in items])
    class_pixels = None
    if args.class_dir is not None:
        class_pixels = torch.stack([M.image_tensor(c.image, args.resolution) for c in class_images(pipe, args)])

    config = T.TrainConfig(instance_prompt=args.instance_prompt, steps=args.steps, lr=args.lr,
                           batch_size=args.batch_size, seed=args.seed, class_prompt=args.class_prompt,
                           prior_loss_weight=args.prior_loss_weight, train_text_encoder=args.train_text_encoder,
                           gradient_checkpointing=args.gradient_checkpointing, mixed_precision=args.mixed_precision)

    def checkpoint(step: int) -> None:
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            T.save_pipeline(pipe, out / f"checkpoint-{step}")

    result = T.fine_tune(pipe, pixels, weights, config, class_pixels=class_pixels, on_step=checkpoint)
    T.save_pipeline(pipe, out)
    log = {"options": vars(args), "reference_image": None if ref is None else items[ref].name,
           "instance_images": [i.name for i in items],
           "mask_coverage": {i.name: float(i.mask.mean()) for i in items},
           "latent_mask_weight": {i.name: float(w.mean()) for i, w in zip(items, weights)},
           "vae_scale_factor": factor, "loss": result.total, "instance_loss": result.instance,
           "prior_loss": result.prior}
    try:
        (out / "dreambooth.json").write_text(json.dumps(log, indent=1))
    except OSError as err:
        raise OutputError(f"cannot write {out / 'dreambooth.json'}: {err}") from None
    if args.sample:
        T.render(pipe, args.sample, out / "samples", args.resolution, args.sample_steps, args.guidance_scale,
                 seed=args.seed)
    print(f"saved the fine-tuned pipeline to {out} (masks in {out / 'masks'}"
          + (f", samples in {out / 'samples'}" if args.sample else "") + ")")
    return 0
