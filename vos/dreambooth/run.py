"""A whole PerSAM-assisted DreamBooth run (``vos dreambooth``): masks for the instance photos (read, or segmented with
PerSAM / PerSAM-F from one reference mask), class images for prior preservation (generated when missing), the
masked fine-tuning, the saved pipeline folder, the log and optional samples.

Writes ``<out>/`` as a diffusers ``StableDiffusionPipeline`` folder, ``<out>/masks/`` (mask PNG + overlay JPEG per
photo), ``<out>/samples/`` and ``<out>/dreambooth.json`` (options and per-step losses). Every input is checked
before SAM or the diffusion models are loaded.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from vos.dreambooth import masks as M
from vos.dreambooth import train as T
from vos.errors import InputError, MaskError, OutputError
from vos.io.atomic import atomic_write
from vos.runs.options import ModelOptions


@dataclass(frozen=True)
class DreamBoothRun:
    """The options of one run (command-line names in parentheses where they differ).

    ``pretrained``: a local diffusers pipeline folder or a hub name; ``instance_dir``: the subject's photos; the
    masks come from ``ref_mask`` (the subject in one photo, ``ref_image``, default the first; PerSAM segments the
    others, PerSAM-F with ``finetune_persam``) or from ``mask_dir`` (one mask per photo, by stem). ``latent_mask``:
    ``soft`` or ``binary`` latent weights. Prior preservation: ``class_dir`` + ``class_prompt`` (missing class images
    up to ``num_class_images`` are generated). ``model``: the SAM used for the masks; its ``device`` also runs the
    diffusion models.
    """

    pretrained: str
    instance_dir: Path
    instance_prompt: str
    out: Path
    steps: int
    ref_mask: Optional[Path] = None
    mask_dir: Optional[Path] = None
    ref_image: Optional[str] = None
    finetune_persam: bool = False
    persam_f_iterations: int = 1000
    latent_mask: str = "soft"
    class_dir: Optional[Path] = None
    class_prompt: Optional[str] = None
    prior_loss_weight: float = 1.0
    num_class_images: int = 0
    overwrite: bool = False
    lr: float = 5e-6
    batch_size: int = 1
    resolution: int = 512
    seed: int = 0
    train_text_encoder: bool = False
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    save_every: int = 0
    sample: Tuple[str, ...] = ()
    sample_steps: int = 25
    guidance_scale: float = 7.5
    model: ModelOptions = field(default_factory=ModelOptions)

    def check(self) -> None:
        """Option combinations that cannot work."""
        for name in ("steps", "batch_size", "resolution", "sample_steps", "persam_f_iterations"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.save_every < 0 or self.num_class_images < 0:
            raise InputError("--save-every and --num-class-images must not be negative")
        if (self.ref_mask is None) == (self.mask_dir is None):
            raise InputError("give the subject's mask in one photo (--ref-mask) or one mask per photo (--mask-dir)")
        if self.ref_image is not None and self.ref_mask is None:
            raise InputError("--ref-image names the photo of --ref-mask; it has no meaning with --mask-dir")
        if (self.class_dir is None) != (self.class_prompt is None):
            raise InputError("prior preservation needs both --class-dir and --class-prompt")
        if self.num_class_images and self.class_dir is None:
            raise InputError("--num-class-images needs --class-dir and --class-prompt")

    def train_config(self) -> T.TrainConfig:
        return T.TrainConfig(instance_prompt=self.instance_prompt, steps=self.steps, lr=self.lr,
                             batch_size=self.batch_size, seed=self.seed, class_prompt=self.class_prompt,
                             prior_loss_weight=self.prior_loss_weight, train_text_encoder=self.train_text_encoder,
                             gradient_checkpointing=self.gradient_checkpointing,
                             mixed_precision=self.mixed_precision)


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


def read_masks(items: Sequence[M.InstanceImage], run: DreamBoothRun) -> Optional[int]:
    """Attach the masks given; returns the reference photo's index (None with ``mask_dir``)."""
    if run.mask_dir is not None:
        M.masks_from_dir(items, run.mask_dir)
        return None
    return M.read_reference_mask(items, run.ref_mask, run.ref_image)


def segment_others(items: Sequence[M.InstanceImage], ref: int, run: DreamBoothRun) -> None:
    """PerSAM (or PerSAM-F) masks for the photos without one; SAM is freed afterwards."""
    if all(item.mask is not None for item in items):
        return
    sam = run.model.load()
    M.segment_with_persam(items, sam, ref, finetune=run.finetune_persam,
                          finetune_iterations=run.persam_f_iterations)
    del sam
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def class_images(pipe, args: DreamBoothRun) -> List[M.InstanceImage]:
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


def dreambooth(run: DreamBoothRun) -> Path:
    """The whole run (see the module docstring); returns the saved pipeline's folder."""
    from vos.models import default_device

    run.check()
    out = Path(run.out)
    device = torch.device(run.model.device) if run.model.device is not None else default_device()
    T.autocast_dtype(run.mixed_precision, device)
    items = M.load_instance_images(run.instance_dir)
    ref = read_masks(items, run)
    if run.class_dir is not None and run.num_class_images == 0:
        M.load_instance_images(run.class_dir, "class")          # fail early on a bad class folder
    T.check_pretrained(run.pretrained)
    prepare_out(out, run.pretrained, run.overwrite)

    if ref is not None:
        segment_others(items, ref, run)
    M.save_masks(items, out / "masks")

    pipe = T.load_pipeline(run.pretrained, device)
    factor = T.vae_scale_factor(pipe)
    if run.resolution % factor:
        raise InputError(f"--resolution {run.resolution} is not a multiple of the VAE scale factor {factor}")
    weights = latent_masks(items, run.resolution, factor, run.latent_mask)
    pixels = torch.stack([M.image_tensor(item.image, run.resolution) for item in items])
    class_pixels = None
    if run.class_dir is not None:
        class_pixels = torch.stack([M.image_tensor(c.image, run.resolution) for c in class_images(pipe, run)])

    def checkpoint(step: int) -> None:
        if run.save_every and step % run.save_every == 0 and step < run.steps:
            T.save_pipeline(pipe, out / f"checkpoint-{step}")

    result = T.fine_tune(pipe, pixels, weights, run.train_config(), class_pixels=class_pixels, on_step=checkpoint)
    T.save_pipeline(pipe, out)
    log = {"options": json.loads(json.dumps(asdict(run), default=str)),
           "reference_image": None if ref is None else items[ref].name,
           "instance_images": [i.name for i in items],
           "mask_coverage": {i.name: float(i.mask.mean()) for i in items},
           "latent_mask_weight": {i.name: float(w.mean()) for i, w in zip(items, weights)},
           "vae_scale_factor": factor, "loss": result.total, "instance_loss": result.instance,
           "prior_loss": result.prior}
    atomic_write(out / "dreambooth.json", lambda f: f.write(json.dumps(log, indent=1)), binary=False)
    if run.sample:
        T.render(pipe, list(run.sample), out / "samples", run.resolution, run.sample_steps, run.guidance_scale,
                 seed=run.seed)
    return out
