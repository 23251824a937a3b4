"""DreamBooth fine-tuning of a Stable Diffusion pipeline with the loss restricted to the subject (PerSAM paper, §5).

Objective per step (Ruiz et al., DreamBooth, with the PerSAM masking): sample instance latents ``z0`` (VAE
posterior sample × ``scaling_factor``), noise ``ε`` and timesteps ``t``; the UNet predicts from
``z_t = √ᾱ_t z0 + √(1-ᾱ_t) ε`` and the instance prompt; the target is ``ε`` (``prediction_type="epsilon"``) or
``v = √ᾱ_t ε - √(1-ᾱ_t) z0`` (``"v_prediction"``). The instance loss is the squared error **averaged over the
subject's latent pixels only** (:func:`masked_diffusion_loss`), so the identifier is never trained to reproduce the
background. With prior preservation, class images with the class prompt add an ordinary (unmasked) MSE weighted
by ``prior_loss_weight``.

What "ignores the background" means precisely: the loss, and hence every gradient, does not depend on the
prediction error at background latent pixels. The UNet still *sees* the background (its input is the whole noisy
latent and its receptive field spans the image), so the background remains context for predicting the subject;
it is just never a target. (At the pixel level the statement is only approximate anyway: the VAE mixes
neighbouring pixels, so a background pixel next to the subject moves the subject's latents.)

Plain PyTorch, no accelerate: one device, optional autocast (fp16/bf16 on CUDA, bf16 on CPU), optional gradient
checkpointing. Trainable weights stay float32; checkpoints are diffusers pipeline folders.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vos.errors import CheckpointError, InputError, OutputError

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (defaults: diffusers' DreamBooth example, constant learning rate)."""

    instance_prompt: str
    steps: int
    lr: float = 5e-6
    batch_size: int = 1
    seed: int = 0
    class_prompt: Optional[str] = None
    prior_loss_weight: float = 1.0
    train_text_encoder: bool = False
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    max_grad_norm: float = 1.0
    adam_betas: "tuple[float, float]" = (0.9, 0.999)
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8


@dataclass
class LossParts:
    """``total = instance + prior_loss_weight * prior`` (``prior`` is None without class images)."""

    total: torch.Tensor
    instance: torch.Tensor
    prior: Optional[torch.Tensor] = None


@dataclass
class TrainResult:
    """Per-step losses (floats) of a finished run."""

    total: List[float] = field(default_factory=list)
    instance: List[float] = field(default_factory=list)
    prior: List[float] = field(default_factory=list)


def masked_diffusion_loss(pred: torch.Tensor, target: torch.Tensor, latent_mask: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over each sample's foreground latent pixels, then over the batch (float32 scalar).

    ``pred``, ``target``: ``B×C×h×w``; ``latent_mask``: ``B×1×h×w`` or ``B×h×w`` weights in [0, 1].
    Sample b: ``Σ_{c,y,x} m_b(y,x)·(pred-target)² / (C · Σ_{y,x} m_b(y,x))``; a sample with zero weight adds 0.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be B×C×h×w")
    mask = latent_mask if latent_mask.dim() == 4 else latent_mask[:, None]
    b, c, h, w = pred.shape
    if mask.shape != (b, 1, h, w):
        raise ValueError(f"latent mask {tuple(latent_mask.shape)} does not fit predictions {tuple(pred.shape)}")
    mask = mask.float()
    err = (pred.float() - target.float()).pow(2)
    per_sample = (err * mask).sum(dim=(1, 2, 3)) / (c * mask.sum(dim=(1, 2, 3))).clamp_min(1e-12)
    return per_sample.mean()


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet must predict: ``noise`` (epsilon) or the velocity (v_prediction), per ``scheduler.config``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise CheckpointError(f"unsupported scheduler prediction_type {kind!r} (epsilon or v_prediction)")


def dreambooth_loss(unet, scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                    text_embeddings: torch.Tensor, instance_mask: torch.Tensor,
                    prior_loss_weight: float = 1.0) -> LossParts:
    """One forward pass and the DreamBooth objective.

    ``latents``, ``noise``: ``B×4×h×w`` (scaled VAE latents); ``timesteps``: int64 ``B``; ``text_embeddings``:
    ``B×L×D``. The first ``n = len(instance_mask)`` samples are instance photos (loss masked by ``instance_mask``,
    ``n×1×h×w``), the remaining ones class images (plain MSE, weight ``prior_loss_weight``).
    """
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, text_embeddings).sample
    target = diffusion_target(scheduler, latents, noise, timesteps)
    n = instance_mask.shape[0]
    instance = masked_diffusion_loss(pred[:n], target[:n], instance_mask)
    if n == latents.shape[0]:
        return LossParts(instance, instance)
    prior = F.mse_loss(pred[n:].float(), target[n:].float())
    return LossParts(instance + prior_loss_weight * prior, instance, prior)


def autocast_dtype(mixed_precision: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype for ``--mixed-precision`` on ``device`` (None = float32)."""
    if mixed_precision not in MIXED_PRECISION:
        raise InputError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, not {mixed_precision!r}")
    if mixed_precision == "no":
        return None
    if mixed_precision == "fp16" and device.type != "cuda":
        raise InputError(f"--mixed-precision fp16 needs a CUDA device (device is {device.type}); use bf16 or no")
    if mixed_precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise InputError(f"--mixed-precision bf16 is supported on CUDA and CPU, not {device.type}")
    return torch.float16 if mixed_precision == "fp16" else torch.bfloat16


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def is_hub_name(name: str) -> bool:
    """True for ``owner/model`` strings that are not an existing local path."""
    return not Path(name).exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None


def check_pretrained(pretrained: str) -> None:
    """Cheap early check: ``pretrained`` is a local folder with ``model_index.json`` or looks like a hub name."""
    path = Path(pretrained)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(f"--pretrained {pretrained} has no model_index.json: not a diffusers pipeline folder")
    elif not is_hub_name(pretrained):
        raise CheckpointError(f"--pretrained {pretrained}: no such folder (expected a diffusers Stable Diffusion "
                              f"pipeline folder with model_index.json, or a hub name owner/model)")


def load_pipeline(pretrained: str, device: "torch.device | str" = "cpu"):
    """``StableDiffusionPipeline`` from a local diffusers folder (or a hub name: downloads), safety checker off."""
    try:
        from diffusers import StableDiffusionPipeline
    except ImportError as err:
        raise CheckpointError(f"DreamBooth needs diffusers and transformers: pip install 'vos[dreambooth]' ({err})")
    check_pretrained(pretrained)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(pretrained, safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"cannot load a Stable Diffusion pipeline from {pretrained}: {err}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def vae_scale_factor(pipe) -> int:
    """Pixels per latent pixel along each axis (8 for Stable Diffusion), as the pipeline computes it."""
    return 2 ** (len(pipe.vae.config.block_out_channels) - 1)


def tokenize(tokenizer, prompt: str) -> torch.Tensor:
    """int64 ``1×L`` token ids, padded/truncated to the tokenizer's ``model_max_length``."""
    return tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_latent_distribution(vae, pixels: torch.Tensor, batch_size: int = 4,
                               dtype: Optional[torch.dtype] = None) -> "tuple[torch.Tensor, torch.Tensor]":
    """VAE posterior ``(mean, std)``, each ``N×4×h×w`` float32, for pixels ``N×3×R×R`` in [-1, 1].

    Computed once: the photos are not augmented, so sampling from the cached posterior each step is the same as
    re-encoding each step.
    """
    device = next(vae.parameters()).device
    means, stds = [], []
    for chunk in pixels.split(batch_size):
        with _autocast(device, dtype):
            dist = vae.encode(chunk.to(device)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def _scale_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        latents = latents - shift
    return latents * vae.config.scaling_factor


class _Cycler:
    """Endless shuffled passes over ``range(n)`` (a new permutation per pass, seeded by ``generator``)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator, self.order = n, generator, []

    def take(self, k: int) -> List[int]:
        out = []
        while len(out) < k:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.generator).tolist()
            out.append(self.order.pop())
        return out


def fine_tune(pipe, instance_pixels: torch.Tensor, instance_masks: torch.Tensor, config: TrainConfig,
          class_pixels: Optional[torch.Tensor] = None, progress: bool = True,
          on_step: Optional[Callable[[int], None]] = None) -> TrainResult:
    """Fine-tune ``pipe.unet`` (and ``pipe.text_encoder`` if asked) in place.

    ``instance_pixels``: float32 ``N×3×R×R`` in [-1, 1]; ``instance_masks``: float32 ``N×1×(R/f)×(R/f)`` latent
    weights (:func:`vos.dreambooth.masks.latent_mask`); ``class_pixels``: ``M×3×R×R`` for prior preservation
    (requires ``config.class_prompt``). ``on_step(step)`` runs after each optimizer step (1-based), e.g. to save.
    """
    if config.steps < 1 or config.batch_size < 1:
        raise InputError(f"--steps and --batch-size must be at least 1 (got {config.steps}, {config.batch_size})")
    if (class_pixels is None) != (config.class_prompt is None):
        raise InputError("prior preservation needs both class images and a class prompt")
    from diffusers import DDPMScheduler

    device = pipe.unet.device
    dtype = autocast_dtype(config.mixed_precision, device)
    unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(config.seed)

    vae.requires_grad_(False)
    text_encoder.requires_grad_(config.train_text_encoder)
    unet.requires_grad_(True)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:     # transformers >= 5 renamed the method
            enable = getattr(text_encoder, "activation_checkpointing_enable", None)
            (enable or text_encoder.gradient_checkpointing_enable)()
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if config.train_text_encoder else [])
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.adam_betas,
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    inst_mean, inst_std = encode_latent_distribution(vae, instance_pixels, dtype=dtype)
    masks = instance_masks.to(device, torch.float32)
    prompts = [tokenize(pipe.tokenizer, config.instance_prompt).to(device)]
    if class_pixels is not None:
        cls_mean, cls_std = encode_latent_distribution(vae, class_pixels, dtype=dtype)
        prompts.append(tokenize(pipe.tokenizer, config.class_prompt).to(device))
        cls_cycle = _Cycler(len(class_pixels), gen)
    inst_cycle = _Cycler(len(instance_pixels), gen)

    def embed() -> List[torch.Tensor]:
        with _autocast(device, dtype):
            return [text_encoder(ids)[0] for ids in prompts]

    if not config.train_text_encoder:
        text_encoder.eval()
        with torch.no_grad():
            frozen = embed()
    unet.train()
    if config.train_text_encoder:
        text_encoder.train()

    result = TrainResult()
    bar = tqdm(range(1, config.steps + 1), desc="DreamBooth", disable=not progress)
    for step in bar:
        b = config.batch_size
        idx = inst_cycle.take(b)
        mean, std = [inst_mean[idx]], [inst_std[idx]]
        if class_pixels is not None:
            cidx = cls_cycle.take(b)
            mean.append(cls_mean[cidx])
            std.append(cls_std[cidx])
        mean, std = torch.cat(mean), torch.cat(std)
        eps = torch.randn(mean.shape, generator=gen).to(device)
        latents = _scale_latents(vae, mean + std * eps)
        noise = torch.randn(latents.shape, generator=gen).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=gen).to(device)
        embeddings = embed() if config.train_text_encoder else frozen
        text = torch.cat([e.expand(b, -1, -1) for e in embeddings])

        with _autocast(device, dtype):
            loss = dreambooth_loss(unet, scheduler, latents, noise, timesteps, text, masks[idx],
                                   config.prior_loss_weight)
        if scaler is not None:
            scaler.scale(loss.total).backward()
            scaler.unscale_(optimizer)
        else:
            loss.total.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        result.total.append(loss.total.item())
        result.instance.append(loss.instance.item())
        if loss.prior is not None:
            result.prior.append(loss.prior.item())
        bar.set_postfix(loss=f"{result.total[-1]:.4f}")
        if on_step is not None:
            on_step(step)
    unet.eval()
    text_encoder.eval()
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    return result


def save_pipeline(pipe, folder: "str | Path") -> Path:
    """Write ``pipe`` as a diffusers pipeline folder (``StableDiffusionPipeline.from_pretrained(folder)`` loads it)."""
    folder = Path(folder)
    try:
        pipe.save_pretrained(folder, safe_serialization=True)
    except OSError as err:
        raise OutputError(f"cannot save the pipeline to {folder}: {err}") from None
    return folder


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


@torch.no_grad()
def render(pipe, prompts: Sequence[str], folder: "str | Path", resolution: int, steps: int = 25,
           guidance_scale: float = 7.5, seed: int = 0, names: Optional[Sequence[str]] = None,
           progress: bool = True, desc: str = "samples") -> List[Path]:
    """Render one image per prompt into ``folder`` (``NN_<prompt-slug>.png`` unless ``names`` are given)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {folder}: {err}") from None
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for i, prompt in enumerate(tqdm(prompts, desc=desc, disable=not progress)):
        image = pipe(prompt, height=resolution, width=resolution, num_inference_steps=steps,
                     guidance_scale=guidance_scale, generator=gen).images[0]
        path = folder / (names[i] if names is not None else f"{i:02d}_{_slug(prompt)}.png")
        try:
            image.save(path)
        except OSError as err:
            raise OutputError(f"cannot write {path}: {err}") from None
        paths.append(path)
    return paths
