"""PerSAM-assisted DreamBooth: masks, the masked objective, the CLI end to end on tiny diffusers components.

The tiny Stable Diffusion pipeline is built from configs (random weights, no download): UNet 32/64 channels,
a 4-block VAE (scale factor 8, like Stable Diffusion), a 2-layer CLIP text encoder and a byte-level CLIP tokenizer
whose vocab/merges files are written here. Instance photos are 3 downscaled DAVIS blackswan frames
(tests/data/dreambooth/README.md); masks come from the real PerSAM engine with the tiny fixture SAM.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vos.cli.common import run
from vos.cli.dreambooth import main
from vos.dreambooth import masks as M
from vos.dreambooth.train import dreambooth_loss, masked_diffusion_loss
from vos.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "dreambooth"
INSTANCE = DATA / "instance"
REF_MASK = DATA / "00000_mask.png"
SAM_CKPT = REPO / "tests" / "data" / "persam_ref" / "weights" / "tiny_sam_public.pt"
TINY_SAM = ["--model", "tiny", "--checkpoint", str(SAM_CKPT), "--encoder", "stock", "--device", "cpu"]
RES = 64


# ----------------------------------------------------------------------------------------------------------------
# tiny diffusers components

def _byte_alphabet() -> list:
    """The 256 printable stand-ins of byte-level BPE (printable Latin-1 bytes map to themselves, the rest to 256+)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def write_tokenizer_files(folder: Path) -> None:
    """A character-level CLIP BPE vocabulary: every byte symbol, alone and word-final, one merge ("sks" becomes
    ``s`` + ``sk</w>``) and the two specials."""
    folder.mkdir(parents=True)
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["sk</w>", "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\ns k</w>\n")


def tiny_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=RES // 8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)


def build_tiny_pipeline(folder: Path) -> Path:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    write_tokenizer_files(folder.parent / "tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(folder.parent / "tokenizer_src", model_max_length=77)
    unet = tiny_unet()
    torch.manual_seed(1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=8, sample_size=RES)
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    assert pipe.vae_scale_factor == 8
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def instance_dir(tmp_path) -> Path:
    return Path(shutil.copytree(INSTANCE, tmp_path / "instance"))


def _weights(folder: Path, sub: str) -> dict:
    from safetensors.torch import load_file

    files = sorted((folder / sub).glob("*.safetensors"))
    assert files, f"no weights in {folder / sub}"
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


def _changed(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    return any(not torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------------------------
# the masked objective

def test_masked_loss_is_mean_over_foreground_weights():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    mask = torch.zeros(2, 1, 6, 6)
    mask[0, :, 1:3, 2:5] = 1.0
    mask[0, :, 3, 2] = 0.5
    mask[1, :, 4:, :] = 1.0
    err = (pred - target) ** 2
    expected = torch.stack([(err[b] * mask[b]).sum() / (4 * mask[b].sum()) for b in range(2)]).mean()
    pred.requires_grad_(True)
    loss = masked_diffusion_loss(pred, target, mask)
    torch.testing.assert_close(loss, expected.float())
    loss.backward()
    assert torch.all(pred.grad[mask.expand_as(pred) == 0] == 0)
    assert torch.all(pred.grad[mask.expand_as(pred) > 0] != 0)
    # not the whole-image mean; but with a full mask it is exactly the ordinary MSE
    assert abs(loss.item() - err.mean().item()) > 1e-3
    torch.testing.assert_close(masked_diffusion_loss(pred, target, torch.ones(2, 6, 6)), err.mean())
    with pytest.raises(ValueError):
        masked_diffusion_loss(pred, target, torch.ones(2, 1, 3, 3))


def _scheduler(prediction_type: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                         prediction_type=prediction_type)


def _same_input_other_target(scheduler, latents, noise, t, where):
    """Latents/noise that differ from the given ones only at ``where`` (bool ``1×1×h×w``) while the UNet input
    ``√ᾱ z0 + √(1-ᾱ) ε`` stays the same: the target (ε or v) at ``where`` changes, nothing else does."""
    ab = scheduler.alphas_cumprod[t].double()
    delta = torch.randn(latents.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * where
    z0 = latents.double() + delta
    eps = noise.double() - delta * ab.sqrt() / (1 - ab).sqrt()
    return z0.float(), eps.float()


def _loss_and_grads(unet, scheduler, latents, noise, t, text, mask):
    unet.zero_grad(set_to_none=True)
    loss = dreambooth_loss(unet, scheduler, latents, noise, t, text, mask)
    loss.total.backward()
    return loss, [p.grad.clone() for p in unet.parameters()]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_instance_loss_ignores_background_targets(prediction_type):
    """The objective never supervises the background: with the UNet input held fixed, changing what the model
    should predict at background latent pixels changes neither the loss nor any gradient; changing it on the
    subject does. (The UNet input itself is the whole noisy latent: the background stays context. Image pixels
    are not used here because the VAE mixes neighbours, so the test is at the latent level.)"""
    unet, scheduler = tiny_unet(), _scheduler(prediction_type)
    g = torch.Generator().manual_seed(3)
    latents, noise = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    t, text = torch.tensor([400]), torch.randn(1, 8, 32, generator=g)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 1:5] = 1.0
    mask[..., 6, 1:5] = 0.25                      # a soft boundary row
    background, foreground = mask == 0, mask > 0

    base, base_grads = _loss_and_grads(unet, scheduler, latents, noise, t, text, mask)
    z0, eps = _same_input_other_target(scheduler, latents, noise, t, background)
    torch.testing.assert_close(scheduler.add_noise(z0, eps, t), scheduler.add_noise(latents, noise, t),
                               rtol=0, atol=1e-5)
    bg, bg_grads = _loss_and_grads(unet, scheduler, z0, eps, t, text, mask)
    torch.testing.assert_close(bg.total, base.total, rtol=1e-5, atol=1e-6)
    for a, b in zip(bg_grads, base_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    z0, eps = _same_input_other_target(scheduler, latents, noise, t, foreground)
    fg, fg_grads = _loss_and_grads(unet, scheduler, z0, eps, t, text, mask)
    assert abs(fg.total.item() - base.total.item()) > 1e-2
    assert max(float((a - b).abs().max()) for a, b in zip(fg_grads, base_grads)) > 1e-3

    # control: the unmasked objective does see the background change (so the first check can fail)
    ones = torch.ones_like(mask)
    z0, eps = _same_input_other_target(scheduler, latents, noise, t, background)
    full_base = dreambooth_loss(unet, scheduler, latents, noise, t, text, ones).total
    full_bg = dreambooth_loss(unet, scheduler, z0, eps, t, text, ones).total
    assert abs(full_bg.item() - full_base.item()) > 1e-2


def test_prior_preservation_loss_is_unmasked():
    """Batch = 1 instance photo (masked) + 1 class image: a background-only target change in the class image
    changes the prior loss (weighted by prior_loss_weight) and leaves the instance loss alone."""
    unet, scheduler = tiny_unet(), _scheduler("epsilon")
    g = torch.Generator().manual_seed(4)
    latents, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t, text = torch.tensor([300, 700]), torch.randn(2, 8, 32, generator=g)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1.0
    base = dreambooth_loss(unet, scheduler, latents, noise, t, text, mask, prior_loss_weight=0.5)
    torch.testing.assert_close(base.total, base.instance + 0.5 * base.prior)

    where = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    where[1] = mask[0] == 0                       # the class image's pixels outside the instance mask
    z0, eps = _same_input_other_target(scheduler, latents, noise, t[:, None, None, None], where)
    changed = dreambooth_loss(unet, scheduler, z0, eps, t, text, mask, prior_loss_weight=0.5)
    torch.testing.assert_close(changed.instance, base.instance, rtol=1e-5, atol=1e-6)
    assert abs(changed.prior.item() - base.prior.item()) > 1e-2
    assert abs(changed.total.item() - base.total.item()) > 5e-3


# ----------------------------------------------------------------------------------------------------------------
# masks and their alignment with the training crop

def test_latent_mask_follows_the_image_crop():
    """Image and mask go through the same crop and resize: an image painted with its own mask comes out as the
    mask; the soft latent weight is the 8×8 area average of it and the binary one its 0.5 threshold."""
    mask = np.zeros((40, 72), bool)                # landscape: the centred 40×40 square is columns 16..55
    mask[5:30, 10:40] = True
    image = np.repeat(mask[..., None] * np.uint8(255), 3, axis=2)
    pixels = (M.image_tensor(image, 32)[0] + 1) / 2
    soft = M.latent_mask(mask, 32, 8, "soft")
    binary = M.latent_mask(mask, 32, 8, "binary")
    assert soft.shape == binary.shape == (1, 4, 4)
    torch.testing.assert_close(soft[0], torch.nn.functional.avg_pool2d(pixels[None, None], 8)[0, 0], atol=1e-6,
                               rtol=0)
    assert soft.min() >= 0 and soft.max() <= 1 and len(torch.unique(soft)) > 2
    torch.testing.assert_close(binary, (soft >= 0.5).float())
    # the part of the mask left of column 16 is cropped away: a mask only there leaves no weight
    left = np.zeros_like(mask)
    left[:, :12] = True
    assert not M.latent_mask(left, 32, 8).any()
    with pytest.raises(InputError):
        M.latent_mask(mask, 36, 8)


def test_read_image_upright_and_mask_formats(tmp_path):
    photo = Image.open(INSTANCE / "00000.jpg")
    exif = photo.getexif()
    exif[0x0112] = 6                              # EXIF orientation: rotate 90° clockwise to display
    photo.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert M.read_image(tmp_path / "rotated.jpg").shape == (224, 126, 3)
    assert M.read_image(INSTANCE / "00000.jpg").shape == (126, 224, 3)
    palette = Image.open(REF_MASK)
    assert palette.mode == "P"
    m = M.read_mask(REF_MASK)
    assert m.dtype == bool and m.shape == (126, 224) and 0 < m.mean() < 0.5
    rgb = np.zeros((126, 224, 3), np.uint8)
    rgb[m] = (128, 0, 0)                          # PerSeg colour convention
    Image.fromarray(rgb).save(tmp_path / "perseg.png")
    np.testing.assert_array_equal(M.read_mask(tmp_path / "perseg.png"), m)
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(M.read_mask(tmp_path / "grey.png"), m)


def test_save_masks_and_mask_dir(tmp_path, instance_dir):
    """Saved masks read back as the masks; --mask-dir matches masks to photos by stem; a reference mask attaches to
    the named photo."""
    items = M.load_instance_images(instance_dir)
    assert [i.name for i in items] == ["00000.jpg", "00015.jpg", "00030.jpg"]
    assert M.read_reference_mask(items, REF_MASK, "00015") == 1 and items[0].mask is None
    rng = np.random.default_rng(0)
    for item in items:
        item.mask = rng.random(item.image.shape[:2]) < 0.3
    saved = M.save_masks(items, tmp_path / "masks")
    for item, png in zip(items, saved):
        np.testing.assert_array_equal(np.array(Image.open(png)) > 0, item.mask)
        assert Image.open(png.with_name(png.stem + "_overlay.jpg")).size == (224, 126)

    again = M.load_instance_images(instance_dir)
    M.masks_from_dir(again, tmp_path / "masks")
    for a, b in zip(again, items):
        np.testing.assert_array_equal(a.mask, b.mask)
    (tmp_path / "masks" / "00030.png").unlink()
    with pytest.raises(InputError, match="no mask for 00030.jpg"):
        M.masks_from_dir(M.load_instance_images(instance_dir), tmp_path / "masks")


# ----------------------------------------------------------------------------------------------------------------
# the tool

def test_cli_end_to_end_with_persam_masks(tmp_path, pretrained, instance_dir):
    """tools/dreambooth.py in a subprocess: PerSAM masks from one reference mask, 2 training steps, samples; the
    result is a pipeline StableDiffusionPipeline.from_pretrained loads and samples from."""
    from diffusers import StableDiffusionPipeline

    from vos.models import load_sam
    from vos.persam import PerSAM

    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "tools" / "dreambooth.py"), "--pretrained", str(pretrained),
           "--instance-dir", str(instance_dir), "--ref-mask", str(REF_MASK), "--instance-prompt", "a photo of sks swan",
           "--out", str(out), "--steps", "2", "--lr", "1e-3", "--resolution", str(RES), "--seed", "1",
           "--sample", "a photo of sks swan", "a sks swan on the moon", "--sample-steps", "1", *TINY_SAM]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DreamBooth" in proc.stderr                          # the tqdm progress bar

    log = json.loads((out / "dreambooth.json").read_text())
    assert log["reference_image"] == "00000.jpg" and len(log["loss"]) == 2
    assert all(np.isfinite(log["loss"])) and log["prior_loss"] == [] and log["vae_scale_factor"] == 8
    assert sorted(p.name for p in (out / "masks").iterdir()) == [
        "00000.png", "00000_overlay.jpg", "00015.png", "00015_overlay.jpg", "00030.png", "00030_overlay.jpg"]
    np.testing.assert_array_equal(np.array(Image.open(out / "masks" / "00000.png")) > 0, M.read_mask(REF_MASK))
    sam = load_sam("tiny", checkpoint=str(SAM_CKPT), encoder="stock", device="cpu")
    persam = PerSAM(sam).set_reference(M.read_image(INSTANCE / "00000.jpg"), M.read_mask(REF_MASK))
    np.testing.assert_array_equal(np.array(Image.open(out / "masks" / "00030.png")) > 0,   # the engine's mask
                                  persam.segment(M.read_image(INSTANCE / "00030.jpg")).mask)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["00_a-photo-of-sks-swan.png",
                                                                  "01_a-sks-swan-on-the-moon.png"]
    assert Image.open(out / "samples" / "00_a-photo-of-sks-swan.png").size == (RES, RES)

    assert _changed(_weights(pretrained, "unet"), _weights(out, "unet"))
    assert not _changed(_weights(pretrained, "text_encoder"), _weights(out, "text_encoder"))
    assert not _changed(_weights(pretrained, "vae"), _weights(out, "vae"))
    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert pipe.safety_checker is None
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a photo of sks swan", num_inference_steps=1, height=RES, width=RES, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, RES, RES, 3) and np.isfinite(image).all()


def test_cli_prior_preservation_text_encoder_persam_f(tmp_path, pretrained, instance_dir):
    """In process: PerSAM-F masks with a named reference, generated class images with prior preservation,
    text-encoder training, gradient checkpointing, bf16 autocast on CPU, a checkpoint."""
    out, class_dir = tmp_path / "out", tmp_path / "class"
    code = run(main, ["--pretrained", str(pretrained), "--instance-dir", str(instance_dir), "--ref-mask",
                      str(REF_MASK), "--ref-image", "00000.jpg", "--finetune-persam", "--persam-f-iterations", "50",
                      "--instance-prompt", "a photo of sks swan", "--class-dir", str(class_dir), "--class-prompt",
                      "a photo of a swan", "--num-class-images", "2", "--prior-loss-weight", "0.5",
                      "--train-text-encoder", "--gradient-checkpointing", "--mixed-precision", "bf16",
                      "--batch-size", "2", "--steps", "2", "--save-every", "1", "--lr", "1e-3",
                      "--resolution", str(RES), "--sample-steps", "1", "--out", str(out), *TINY_SAM])
    assert code == 0
    assert sorted(p.name for p in class_dir.iterdir()) == ["class-0000.png", "class-0001.png"]
    log = json.loads((out / "dreambooth.json").read_text())
    assert len(log["prior_loss"]) == 2 and all(np.isfinite(log["loss"]))
    np.testing.assert_allclose(log["loss"], np.array(log["instance_loss"]) + 0.5 * np.array(log["prior_loss"]),
                               rtol=1e-5)
    assert (out / "checkpoint-1" / "model_index.json").exists() and not (out / "checkpoint-2").exists()
    assert _changed(_weights(pretrained, "text_encoder"), _weights(out, "text_encoder"))
    assert _changed(_weights(out / "checkpoint-1", "unet"), _weights(out, "unet"))


def test_cli_mask_dir_does_not_load_sam(tmp_path, pretrained, instance_dir):
    """With --mask-dir no SAM is built (a non-existent SAM checkpoint does not matter); binary latent masks."""
    masks = tmp_path / "masks"
    masks.mkdir()
    for stem in ("00000", "00015", "00030"):
        shutil.copy(REF_MASK, masks / f"{stem}.png")
    out = tmp_path / "out"
    args = ["--pretrained", str(pretrained), "--instance-dir", str(instance_dir), "--mask-dir", str(masks),
            "--instance-prompt", "a photo of sks swan", "--steps", "1", "--resolution", "32", "--out", str(out),
            "--latent-mask", "binary",
            "--model", "tiny", "--checkpoint", str(tmp_path / "missing.pt"), "--device", "cpu"]
    assert run(main, args) == 0
    assert (out / "model_index.json").exists() and (out / "masks" / "00030_overlay.jpg").exists()
    assert run(main, args) == 2                                 # refuses to overwrite the saved pipeline
    assert run(main, args + ["--overwrite"]) == 0


def _write(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("case", ["no images", "unreadable image", "empty mask", "mask size", "bad ref image",
                                  "class without prompt", "missing pretrained", "fp16 on cpu"])
def test_bad_input_is_a_clear_error(case, tmp_path, instance_dir, capsys):
    images, mask = instance_dir, REF_MASK
    extra = []
    if case == "no images":
        images = tmp_path / "empty"
        images.mkdir()
        expect = "has no images"
    elif case == "unreadable image":
        (images / "00007.jpg").write_bytes(b"not a jpeg")
        expect = "cannot read image"
    elif case == "empty mask":
        mask = _write(tmp_path / "empty.png", np.zeros((126, 224), np.uint8))
        expect = "no foreground"
    elif case == "mask size":
        mask = _write(tmp_path / "small.png", np.full((60, 100), 255, np.uint8))
        expect = "is 100×60 (W×H) but image"
    elif case == "bad ref image":
        extra, expect = ["--ref-image", "nope.jpg"], "is not one of the instance images"
    elif case == "class without prompt":
        extra, expect = ["--class-dir", str(images)], "both --class-dir and --class-prompt"
    elif case == "missing pretrained":
        extra, expect = ["--pretrained", str(tmp_path / "no-such-model")], "no such folder"
    else:
        extra, expect = ["--mixed-precision", "fp16"], "needs a CUDA device"
    args = ["--pretrained", str(tmp_path / "never-loaded"), "--instance-dir", str(images), "--ref-mask", str(mask),
            "--instance-prompt", "a photo of sks swan", "--steps", "1", "--out", str(tmp_path / "out"),
            "--model", "tiny", "--checkpoint", str(tmp_path / "missing.pt"), "--device", "cpu", *extra]
    assert run(main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1, err
