"""``tools/dreambooth.py``: PerSAM-assisted DreamBooth — segment the subject in the instance photos, fine-tune a
Stable Diffusion pipeline on the foreground only, save it as a diffusers folder, optionally render samples."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from vos.cli.common import add_model_args, model_options
from vos.dreambooth import masks as M
from vos.dreambooth import train as T


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vos.dreambooth.run import DreamBoothRun, dreambooth

    args = build_parser().parse_args(argv)
    paths = {k: None if getattr(args, k) is None else Path(getattr(args, k))
             for k in ("instance_dir", "out", "ref_mask", "mask_dir", "class_dir")}
    run = DreamBoothRun(
        pretrained=args.pretrained, instance_prompt=args.instance_prompt, steps=args.steps, ref_image=args.ref_image,
        finetune_persam=args.finetune_persam, persam_f_iterations=args.persam_f_iterations,
        latent_mask=args.latent_mask, class_prompt=args.class_prompt, prior_loss_weight=args.prior_loss_weight,
        num_class_images=args.num_class_images, overwrite=args.overwrite, lr=args.lr, batch_size=args.batch_size,
        resolution=args.resolution, seed=args.seed, train_text_encoder=args.train_text_encoder,
        gradient_checkpointing=args.gradient_checkpointing, mixed_precision=args.mixed_precision,
        save_every=args.save_every, sample=tuple(args.sample), sample_steps=args.sample_steps,
        guidance_scale=args.guidance_scale, model=model_options(args), **paths)
    out = dreambooth(run)
    print(f"saved the fine-tuned pipeline to {out} (masks in {out / 'masks'}"
          + (f", samples in {out / 'samples'}" if args.sample else "") + ")")
    return 0
