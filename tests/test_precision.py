"""``--precision bf16``: the fast encoder (and SAM 2's image encoder) in bfloat16 where the hardware has bfloat16
dot products, a clear refusal where it does not, the precision and the CPU recorded with every run.

The machines of this project change CPU between sessions (Zen 3 without AVX512-BF16, Zen 4 and Zen 5 with it): the
tests that need the instructions run where they exist and check the refusal of this very CPU where they do not;
the refusal itself is also checked everywhere, with the CPU's flags replaced by those of a CPU without them.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import vos.models.fast_encoder as fe
import vos.models.precision as precision
from conftest import KITE, KITE_GT, MODEL_ARGS, WEIGHTS, one_error_line, pngs, run_tool, small_kite
from vos.errors import InputError
from vos.io import read_video
from vos.io.masks import load_label_map
from vos.machine import CpuInfo, cpu_info
from vos.models import encoder_precision, load_model, load_sam, use_fast_encoder
from vos.trackers import Tracker

MISSING = precision.bf16_missing("cpu")
HERE = "this CPU has bfloat16 dot products: the bf16 tests run instead"
ELSEWHERE = "this CPU has no bfloat16 dot products: test_bf16_is_refused_here and its command-line tests run instead"
FAST_ARGS = [a if a != "stock" else "fast" for a in MODEL_ARGS]
ZEN3 = CpuInfo("AMD EPYC 7B13, family 25 model 1", 2, ("avx2",))
ZEN4 = CpuInfo("AMD EPYC, family 25 model 17", 2, ("avx2", "avx512f", "avx512_bf16"))
#: bfloat16 keeps 8 significant bits: the issue's bound on the relative error of an image embedding.
REL_ERROR = 1e-2


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """This process sees a CPU without bfloat16 dot products (the flags come from /proc/cpuinfo otherwise)."""
    monkeypatch.setattr(precision, "cpu_info", lambda: ZEN3)


def test_bf16_is_refused_on_a_cpu_without_bf16_dot_products(cpu_without_bf16):
    for name in ("tiny", "sam2.1_hiera_tiny_256"):
        with pytest.raises(InputError) as err:
            load_model(name, random_weights=True, device="cpu", precision="bf16")
        message = str(err.value)
        assert "AMD EPYC 7B13" in message and "avx512_bf16" in message and "amx_bf16" in message, message
        assert "use --precision fp32" in message
    assert encoder_precision(load_sam("tiny", random_weights=True, device="cpu")) == "fp32"


def test_track_command_refuses_bf16_in_one_line_before_writing_anything(tmp_path, cpu_without_bf16):
    frames, mask = small_kite(tmp_path / "in", 2)
    out = tmp_path / "run"
    args = [a if a != "stock" else "fast" for a in MODEL_ARGS]
    one_error_line(run_tool("track", "--video", frames, "--mask", mask, "--out", out, *args, "--precision", "bf16"),
                   "--precision bf16", "no bfloat16 dot-product instructions", "use --precision fp32")
    assert not out.exists()


def test_bf16_needs_the_fast_vit_encoder(monkeypatch):
    """On a CPU with bfloat16 dot products (here: its flags), so that the CPU check passes on any machine."""
    monkeypatch.setattr(precision, "cpu_info", lambda: ZEN4)
    with pytest.raises(InputError, match="--encoder fast"):
        load_sam("tiny", random_weights=True, device="cpu", encoder="stock", precision="bf16")
    with pytest.raises(InputError, match="unknown precision 'fp16'"):
        load_sam("tiny", random_weights=True, device="cpu", precision="fp16")
    with pytest.raises(InputError, match="vit_t: its TinyViT image encoder runs in float32 only"):
        load_sam("vit_t", random_weights=True, device="cpu", precision="bf16")


@pytest.mark.skipif(MISSING is not None, reason=ELSEWHERE)
@pytest.mark.parametrize("chunked", [False, True])
@torch.inference_mode()
def test_bf16_embeddings_are_close_and_really_bfloat16(monkeypatch, chunked):
    """The fixture model's embedding of a real frame within 1 % of float32's (and not equal to it: the blocks do
    run in bfloat16). ``chunked``: a tiny mask budget sends the global block through the explicit bfloat16
    attention that ViT-B's 4096-token global blocks use."""
    if chunked:
        monkeypatch.setattr(fe, "MASK_BUDGET", 64)
        monkeypatch.setattr(fe, "BF16_QUERY_ROWS", 16)
    fp32 = load_sam("tiny", checkpoint=str(WEIGHTS), device="cpu")
    bf16 = load_sam("tiny", checkpoint=str(WEIGHTS), device="cpu", precision="bf16")
    frame = next(iter(read_video(KITE)))
    from vos.models.sam_backend import sam_backend

    ref, out = sam_backend(fp32).encode(frame).features, sam_backend(bf16).encode(frame).features
    assert out.dtype == torch.float32 and encoder_precision(bf16) == "bf16"
    assert 1e-4 < rel_error(out, ref) <= REL_ERROR
    # the float32 parameters are untouched: switching back gives the exact encoder again
    assert torch.equal(use_fast_encoder(bf16).image_encoder(torch.ones(1, 3, 1024, 1024)),
                       fp32.image_encoder(torch.ones(1, 3, 1024, 1024)))


@pytest.mark.skipif(MISSING is not None, reason=ELSEWHERE)
@torch.inference_mode()
def test_explicit_bf16_attention_matches_float64():
    """The chunked bfloat16 attention (one head, a few query rows at a time) against the float64 formula."""
    torch.manual_seed(3)
    b, heads, hk, wk, dim = 2, 3, 6, 5, 16
    n = hk * wk
    q, k, v = torch.randn(3, b, heads, n, dim).unbind(0)
    rel_h, rel_w = torch.randn(b, heads, n, hk), torch.randn(b, heads, n, wk)
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, n, n)
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) * dim ** -0.5 + bias.double(), -1) @ v.double()
    bf = [t.bfloat16() for t in (q, k, v, rel_h, rel_w)]
    out = fe._explicit_attention(*bf[:3], dim ** -0.5, *bf[3:])
    assert out.dtype == torch.bfloat16 and out.shape == (b, n, heads, dim)
    assert rel_error(out.transpose(1, 2), ref) < 2e-2


@pytest.mark.skipif(MISSING is not None, reason=ELSEWHERE)
def test_bf16_tracking_keeps_every_confident_pixel():
    """PerSAM-F on real kite-surf frames: wherever the float32 tracker's final logit is far from 0, the bfloat16
    tracker makes the same decision; the label maps agree on nearly every pixel. (The fixture model's weights are
    random: its logits are small, median |logit| ≈ 0.28, so "far" is 0.25 here, which about half the pixels are.)"""
    frames = [f for _, f in zip(range(4), read_video(KITE))]
    first = load_label_map(KITE_GT)
    results = {}
    for p in ("fp32", "bf16"):
        tracker = Tracker(load_sam("tiny", checkpoint=str(WEIGHTS), device="cpu", precision=p), method="persam_f",
                          fit_iterations=30)
        tracker.add_objects(frames[0], first)
        results[p] = [tracker.step(f) for f in frames[1:]]
    confident = 0
    for a, b in zip(results["fp32"], results["bf16"]):
        assert np.mean(a.label_map == b.label_map) > 0.99
        for obj_id, logits in a.logits.items():
            far = np.abs(logits) > 0.25
            confident += int(far.sum())
            np.testing.assert_array_equal(logits[far] > 0, b.logits[obj_id][far] > 0)
    assert confident > 0.4 * sum(r.label_map.size * len(r.logits) for r in results["fp32"])


@pytest.mark.skipif(MISSING is not None, reason=ELSEWHERE)
def test_sam2_bf16_image_encoder_is_close_to_float32():
    from vos.models.backend import backend_for

    frame = next(iter(read_video(KITE)))
    fp32 = backend_for(load_model("sam2.1_hiera_tiny_256", random_weights=True, device="cpu"))
    bf16 = backend_for(load_model("sam2.1_hiera_tiny_256", random_weights=True, device="cpu", precision="bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    ref, out = fp32.encode(frame), bf16.encode(frame)
    for a, b in zip(ref.backbone_fpn + ref.vision_pos_enc, out.backbone_fpn + out.vision_pos_enc):
        assert b.dtype == torch.float32
        assert rel_error(b, a) <= 3e-2
    assert rel_error(out.backbone_fpn[-1], ref.backbone_fpn[-1]) > 1e-4


@pytest.mark.skipif(MISSING is not None, reason=ELSEWHERE)
@torch.inference_mode()
def test_bf16_keeps_vit_b_widths_within_one_percent(monkeypatch):
    """ViT-B's widths (768 channels, 12 heads of 64, MLP 3072, neck 256) with seeded random weights, two blocks (one
    windowed, one global through the chunked bfloat16 attention) on a 256² input (16×16 tokens: the 14×14 windows
    are padded): the bfloat16 fast encoder within 1 % of the stock float32 encoder, and not equal to it."""
    from segment_anything.modeling import ImageEncoderViT

    monkeypatch.setattr(fe, "MASK_BUDGET", 64)
    monkeypatch.setattr(fe, "BF16_QUERY_ROWS", 16)
    torch.manual_seed(0)
    stock = ImageEncoderViT(img_size=256, embed_dim=768, depth=2, num_heads=12, out_chans=256, qkv_bias=True,
                            use_rel_pos=True, window_size=14, global_attn_indexes=(1,)).eval()
    for block in stock.blocks:     # random relative position tables (zero at initialisation)
        block.attn.rel_pos_h.normal_(0, 0.5)
        block.attn.rel_pos_w.normal_(0, 0.5)
    bf16 = use_fast_encoder(copy.deepcopy(stock), precision="bf16")
    image = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    ref, out = stock(image), bf16(image)
    assert out.dtype == torch.float32 and out.shape == ref.shape == (1, 256, 16, 16)
    assert encoder_precision(bf16) == "bf16"
    assert 1e-4 < rel_error(out, ref) <= REL_ERROR


@pytest.mark.skipif(MISSING is not None, reason=ELSEWHERE)
def test_track_command_runs_in_bf16(tmp_path):
    """``vos track --precision bf16`` succeeds, records bf16, and its label maps agree with float32's on nearly every
    pixel."""
    frames, mask = small_kite(tmp_path / "in", 3)
    maps = {}
    for p in ("fp32", "bf16"):
        out = tmp_path / p
        proc = run_tool("track", "--video", frames, "--mask", mask, "--out", out, *FAST_ARGS, "--precision", p,
                        "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert json.loads((out / "vos_run.json").read_text())["precision"] == p
        maps[p] = pngs(out)
    assert list(maps["bf16"]) == [f"{i:05d}.png" for i in range(3)]
    assert all(np.mean(maps["bf16"][n] == maps["fp32"][n]) > 0.99 for n in maps["fp32"])


@pytest.mark.skipif(MISSING is not None, reason=ELSEWHERE)
def test_app_starts_in_bf16(tmp_path, monkeypatch):
    """``vos app --precision bf16`` passes its checks and serves with bf16 as the page's model precision; a run with
    those model options (what the page's Track button starts) encodes in bfloat16 and records it."""
    import vos.app.server as server
    from vos.runs.options import TrackRun
    from vos.runs.track import track

    served = []
    monkeypatch.setattr(server, "serve", served.append)
    proc = run_tool("app", "--out", tmp_path / "app-runs", "--model", "tiny", "--checkpoint", WEIGHTS, "--device",
                    "cpu", "--precision", "bf16", "--port", "7999")
    assert proc.returncode == 0, proc.stderr
    (config,) = served
    assert config.model.precision == "bf16" and config.model_for("vit_b").precision == "bf16"
    model = config.model.load()
    assert encoder_precision(model) == "bf16"
    frames, mask = small_kite(tmp_path / "in", 2)
    track(TrackRun(str(frames), str(mask), tmp_path / "run", model=config.model), model=model)
    assert json.loads((tmp_path / "run" / "vos_run.json").read_text())["precision"] == "bf16"


@pytest.mark.skipif(MISSING is None, reason=HERE)
def test_bf16_is_refused_here():
    """On this CPU (no AVX512-BF16 or AMX): the refusal names it."""
    with pytest.raises(InputError) as err:
        load_sam("tiny", random_weights=True, device="cpu", precision="bf16")
    assert cpu_info().model in str(err.value) and "use --precision fp32" in str(err.value)


@pytest.mark.skipif(MISSING is None, reason=HERE)
def test_track_and_app_refuse_bf16_here_in_one_line(tmp_path):
    """The counterpart of the two tests above on this very CPU (its flags not replaced): ``vos track`` and ``vos app``
    with ``--precision bf16`` print one error line naming it, exit 2 and write nothing."""
    frames, mask = small_kite(tmp_path / "in", 2)
    out = tmp_path / "run"
    one_error_line(run_tool("track", "--video", frames, "--mask", mask, "--out", out, *FAST_ARGS, "--precision",
                            "bf16"), "--precision bf16", cpu_info().model, "use --precision fp32")
    app_out = tmp_path / "app-runs"
    one_error_line(run_tool("app", "--out", app_out, "--model", "tiny", "--checkpoint", WEIGHTS, "--device", "cpu",
                            "--precision", "bf16", "--port", "7999"),
                   "--precision bf16", cpu_info().model, "use --precision fp32")
    assert not out.exists() and not app_out.exists()


def test_run_settings_record_the_precision_and_the_machine(tmp_path):
    """``vos_run.json`` holds the precision (compared on resume; runs of older versions count as fp32) and the CPU
    model and instruction sets (recorded, not compared)."""
    frames, mask = small_kite(tmp_path / "in", 3)
    out = tmp_path / "run"
    args = ["--video", frames, "--mask", mask, "--out", out, "--method", "persam", *MODEL_ARGS]
    assert run_tool("track", *args, "--max-frames", "2").returncode == 0
    settings_file = out / "vos_run.json"
    settings = json.loads(settings_file.read_text())
    assert settings["precision"] == "fp32"
    assert settings["machine"] == json.loads(json.dumps(cpu_info().to_dict()))
    del settings["precision"]                                 # as a run of an older vos wrote it
    settings["machine"] = ZEN3.to_dict()                      # another CPU does not block resuming
    settings_file.write_text(json.dumps(settings))
    assert run_tool("track", *args, "--resume").returncode == 0
    assert json.loads(settings_file.read_text())["precision"] == "fp32"
    fast = [a if a != "stock" else "fast" for a in args]
    one_error_line(run_tool("track", *fast, "--precision", "bf16", "--resume"),
                   "cannot resume", 'precision: "fp32" → "bf16"')


def test_app_refuses_bf16_before_serving(tmp_path, cpu_without_bf16):
    """``vos app --precision bf16`` on such a CPU: one error line, exit 2, nothing served or written."""
    out = tmp_path / "app-runs"
    one_error_line(run_tool("app", "--out", out, "--model", "tiny", "--checkpoint", WEIGHTS, "--device", "cpu",
                            "--precision", "bf16", "--port", "7999"),
                   "--precision bf16", "AMD EPYC 7B13", "use --precision fp32")
    assert not out.exists()
