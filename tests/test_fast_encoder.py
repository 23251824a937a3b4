"""vos.models.fast_encoder computes the stock segment-anything image encoder's function, faster.

Every comparison runs the stock module and the converted one on the same weights and a real frame (DAVIS blackswan,
resized and padded as SAM does), and asserts float32 agreement within 1e-4.
"""
import copy
import importlib.util
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from segment_anything import build_sam_vit_b
from segment_anything.modeling import ImageEncoderViT
from segment_anything.utils.transforms import ResizeLongestSide

import vos.models.fast_encoder as fe
from vos.errors import InputError
from vos.models.fast_encoder import encoder_kind, use_fast_encoder, use_stock_encoder
from vos.models.tiny import build_tiny_sam

DATA = Path(__file__).parent / "data"
FRAME = DATA / "fast_encoder" / "blackswan_00000.jpg"
PERSAM = DATA / "persam_ref"
REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-4
PIXEL_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
PIXEL_STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def frame_input(size: int = 1024, path: Path = FRAME) -> torch.Tensor:
    """``path`` as SAM encoder input: long side resized to ``size``, normalised, zero-padded; (1, 3, size, size)."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    x = torch.as_tensor(ResizeLongestSide(size).apply_image(rgb)).permute(2, 0, 1).float()
    x = (x - PIXEL_MEAN) / PIXEL_STD
    return nn.functional.pad(x, (0, size - x.shape[2], 0, size - x.shape[1]))[None]


@pytest.fixture(autouse=True)
def _private_rng():
    """Tests here seed torch's global generator; keep that from leaking into other test files."""
    with torch.random.fork_rng(devices=[]):
        yield


def tiny_encoder(cls=ImageEncoderViT, seed: int = 0, **overrides) -> nn.Module:
    """The project's tiny encoder configuration (block 0 windowed 14×14, block 1 global, relative positions), with
    seeded weights; the zero-initialised relative-position and absolute-position tables are drawn too."""
    kwargs = dict(img_size=1024, patch_size=16, in_chans=3, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
                  out_chans=64, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU,
                  use_abs_pos=True, use_rel_pos=True, rel_pos_zero_init=True, window_size=14,
                  global_attn_indexes=(1,))
    kwargs.update(overrides)
    torch.manual_seed(seed)
    enc = cls(**kwargs).eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "rel_pos" in name:
                p.normal_(0.0, 0.5)
            elif name == "pos_embed":
                p.normal_(0.0, 0.1)
    return enc


def stock_and_fast(enc: nn.Module):
    """(stock copy, ``enc`` converted in place)."""
    stock = copy.deepcopy(enc)
    return stock, use_fast_encoder(enc)


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


@torch.inference_mode()
def test_tiny_encoder_matches_stock_and_relative_positions_matter():
    stock, fast = stock_and_fast(tiny_encoder())
    x = frame_input()
    ref = stock(x)
    out = fast(x)
    assert encoder_kind(fast) == "fast" and encoder_kind(stock) == "stock"
    assert out.shape == ref.shape == (1, 64, 64, 64) and out.dtype == torch.float32
    assert max_diff(out, ref) <= ATOL
    # the test would notice a fast path that dropped the relative-position bias
    no_rel = copy.deepcopy(stock)
    with torch.no_grad():
        for name, p in no_rel.named_parameters():
            if "rel_pos" in name:
                p.zero_()
    assert max_diff(no_rel(x), ref) > 100 * ATOL


def test_conversion_keeps_parameters_and_state_dict():
    sam = build_tiny_sam()
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    params_before = [id(p) for p in sam.parameters()]
    use_fast_encoder(sam)
    after = sam.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert [id(p) for p in sam.parameters()] == params_before
    use_stock_encoder(sam)
    assert list(sam.state_dict()) == list(before)


@torch.inference_mode()
def test_converted_sam_loaded_with_fixture_weights_reproduces_reference_embedding():
    """Convert first, then load the conformance fixture's weights: the embedding of its test image matches both the
    stock encoder and the summary the reference implementation recorded."""
    weights = torch.load(PERSAM / "weights" / "tiny_sam_public.pt", map_location="cpu", weights_only=True)
    fast = use_fast_encoder(build_tiny_sam(seed=1))
    fast.load_state_dict(weights, strict=True)
    stock = build_tiny_sam(seed=2)
    stock.load_state_dict(weights, strict=True)
    assert encoder_kind(fast) == "fast" and encoder_kind(stock) == "stock"

    x = frame_input(path=PERSAM / "cases" / "image_cat" / "inputs" / "test_image.png")
    out = fast.image_encoder(x)
    assert max_diff(out, stock.image_encoder(x)) <= ATOL

    summary = json.loads((PERSAM / "cases" / "image_cat" / "persam" / "meta.json").read_text())["test_features_summary"]
    assert list(out.shape) == summary["shape"]
    for s in summary["samples"]:
        assert abs(float(out[0, s["c"], s["y"], s["x"]]) - s["value"]) <= ATOL
    assert float(out.double().mean()) == pytest.approx(summary["mean"], abs=1e-5)
    assert float(out.double().std()) == pytest.approx(summary["std"], abs=1e-5)
    assert float(out.double().abs().sum()) == pytest.approx(summary["abs_sum"], rel=1e-5)


@pytest.mark.parametrize("overrides", [
    dict(img_size=320, window_size=7),                      # 20×20 tokens in 7×7 windows: padded to 21×21
    dict(img_size=352, window_size=8, num_heads=4),         # 22×22 tokens in 8×8 windows: padded to 24×24
    dict(img_size=224, window_size=14),                     # 14×14 tokens: one window, no padding
    dict(img_size=320, window_size=7, use_rel_pos=False),   # no relative positions: plain fused attention
    dict(img_size=320, window_size=7, qkv_bias=False, global_attn_indexes=()),
])
@torch.inference_mode()
def test_windowed_and_global_blocks_are_exact_for_other_grids(overrides):
    stock, fast = stock_and_fast(tiny_encoder(**overrides))
    x = frame_input(overrides["img_size"])
    assert max_diff(fast(x), stock(x)) <= ATOL


@torch.inference_mode()
def test_blocks_are_exact_on_non_square_grids():
    """Blocks on a 17×23 token grid: the windowed block pads to 28×28; the global block (built for 64×64) resizes its
    relative-position tables by interpolation."""
    stock, fast = stock_and_fast(tiny_encoder())
    torch.manual_seed(3)
    tokens = torch.randn(2, 17, 23, 32)
    for stock_block, fast_block in zip(stock.blocks, fast.blocks):
        assert max_diff(fast_block(tokens), stock_block(tokens)) <= ATOL


@pytest.mark.parametrize("depth, global_blocks", [(2, (1,)), (3, (1, 2))])
@torch.inference_mode()
def test_hq_encoder_matches_including_interm_embeddings(depth, global_blocks):
    from segment_anything_hq.modeling import ImageEncoderViT as HQImageEncoderViT

    stock, fast = stock_and_fast(tiny_encoder(cls=HQImageEncoderViT, depth=depth, global_attn_indexes=global_blocks))
    x = frame_input()
    ref, ref_interm = stock(x)
    out, interm = fast(x)
    assert encoder_kind(fast) == "fast"
    assert max_diff(out, ref) <= ATOL
    assert len(interm) == len(ref_interm) == len(global_blocks)
    for a, b in zip(interm, ref_interm):
        assert a.shape == b.shape == (1, 64, 64, 32)
        assert max_diff(a, b) <= ATOL


@pytest.mark.slow
@torch.inference_mode()
def test_full_size_vit_b_matches_stock():
    torch.manual_seed(0)
    enc = build_sam_vit_b().image_encoder.eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if "rel_pos" in name:
                p.normal_(0.0, 0.05)
    x = frame_input()
    ref = enc(x)
    use_fast_encoder(enc)
    out = enc(x)
    assert out.shape == (1, 256, 64, 64)
    assert max_diff(out, ref) <= ATOL


@torch.inference_mode()
def test_revert_restores_stock_classes_and_bitwise_outputs():
    enc = tiny_encoder()
    pristine = copy.deepcopy(enc)
    stock_types = [type(m) for m in enc.modules()]
    use_fast_encoder(enc)
    use_fast_encoder(enc)  # converting twice is the same as once
    converted = [type(m) for m in enc.modules()]
    assert all(c is s or c.__bases__[1] is s for c, s in zip(converted, stock_types))
    # encoder, patch embedding, 2 attention, 2 MLP blocks, the neck projection
    assert sum(c is not s for c, s in zip(converted, stock_types)) == 1 + 1 + 2 + 2 + 1
    use_stock_encoder(enc)
    assert [type(m) for m in enc.modules()] == stock_types
    assert encoder_kind(enc) == "stock"
    x = frame_input()
    assert torch.equal(enc(x), pristine(x))


def test_outputs_do_not_depend_on_the_thread_count():
    """A 1-CPU Ray actor and a 2-thread run must write the same masks: the fast encoder gives the same bits at 1 and
    2 threads (on ViT-B's widths the stock neck convolution differs by ~2e-6 between them here)."""
    enc = use_fast_encoder(tiny_encoder(embed_dim=768, out_chans=256))
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        outputs = []
        for count in (1, 2):
            torch.set_num_threads(count)
            with torch.no_grad():
                outputs.append(enc(x))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outputs[0], outputs[1])


def test_mobile_sam_tinyvit_is_left_stock():
    from vos.models.registry import get_spec

    torch.manual_seed(0)
    sam = get_spec("vit_t").build()
    types = [type(m) for m in sam.modules()]
    assert use_fast_encoder(sam) is sam
    assert [type(m) for m in sam.modules()] == types
    assert encoder_kind(sam) == "stock"


def test_invalid_requests_raise_input_error():
    with pytest.raises(InputError, match="fp16"):
        use_fast_encoder(tiny_encoder(), precision="fp16")
    with pytest.raises(InputError, match="Linear"):
        use_fast_encoder(nn.Linear(2, 2))


@torch.inference_mode()
def test_compile_option_keeps_outputs_and_is_undone_by_revert():
    stock = tiny_encoder()
    fast = use_fast_encoder(copy.deepcopy(stock), compile={"backend": "eager"})
    assert fast._compiled_call_impl is not None
    x = frame_input()
    assert max_diff(fast(x), stock(x)) <= ATOL
    assert list(fast.state_dict()) == list(stock.state_dict())
    use_stock_encoder(fast)
    assert fast._compiled_call_impl is None


def test_gradients_through_fast_encoder_are_as_accurate_as_stock():
    """Autograd goes through the fast encoder (plain F.linear there) including the relative-position mask: each
    parameter's gradient is as close to a float64 stock computation as the float32 stock gradient is."""
    enc = tiny_encoder(img_size=320, window_size=7)
    reference = copy.deepcopy(enc).double()
    stock, fast = stock_and_fast(enc)
    x = frame_input(320)
    torch.manual_seed(5)
    weights = torch.randn(1, 64, 20, 20, dtype=torch.float64)
    (reference(x.double()) * weights).sum().backward()
    (stock(x) * weights.float()).sum().backward()
    (fast(x) * weights.float()).sum().backward()
    for (name, f), s, r in zip(fast.named_parameters(), stock.parameters(), reference.parameters()):
        fast_err, stock_err = float((f.grad - r.grad).abs().max()), float((s.grad - r.grad).abs().max())
        assert fast_err <= 4 * stock_err + 1e-6, (name, fast_err, stock_err, float(r.grad.abs().max()))


@pytest.mark.parametrize("budget, rows", [
    (3 * 2 * 36 * 36, 36),   # 3 windows per chunk (7 windows: last chunk has 1)
    (36 * 36, 36),           # one head of one window per chunk
    (2 * 10 * 36, 10),       # 10 query rows x 2 heads per chunk (36 rows: last chunk has 6)
])
@torch.inference_mode()
def test_mask_chunking_is_exact(monkeypatch, budget, rows):
    """Chunked over windows, heads and query rows (forced by a small budget), attention equals the float64
    softmax(scale·q·kᵀ + rel_h + rel_w)·v."""
    torch.manual_seed(4)
    b, heads, hk, wk, dim = 7, 3, 6, 6, 16
    n = hk * wk
    q, k, v = torch.randn(b, n, 3, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)  # strided views, as in the model
    rel_h, rel_w = torch.randn(b, heads, n, hk), torch.randn(b, heads, n, wk)
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, heads, n, n)
    scores = (q.double() @ k.double().transpose(-1, -2)) * dim ** -0.5 + bias.double()
    expected = (scores.softmax(-1) @ v.double()).transpose(1, 2)
    monkeypatch.setattr(fe, "MASK_BUDGET", budget)
    monkeypatch.setattr(fe, "QUERY_ROWS", rows)
    out = fe.rel_pos_attention(q, k, v, dim ** -0.5, (rel_h, rel_w))
    assert out.shape == (b, n, heads, dim)
    assert max_diff(out.double(), expected) <= 1e-5


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_encoder", REPO / "tools" / "bench_encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_tool_reports_times_memory_and_agreement(tmp_path, capsys):
    from vos.models.precision import bf16_missing

    bench = _bench_module()
    out = tmp_path / "bench.json"
    assert bench.main(["--model", "tiny", "--runs", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    variants = result["variants"]
    bf16 = bf16_missing("cpu") is None
    assert list(variants) == ["stock", "vos"] + (["stock_bf16", "vos_bf16"] if bf16 else [])
    stock, vos = variants["stock"], variants["vos"]
    assert len(stock["wall_s"]) == len(vos["cpu_s"]) == 1
    assert vos["max_abs_diff_embeddings"] <= ATOL and vos["rel_error_embeddings"] < 1e-5
    if bf16:   # vos bfloat16: within 1 % of stock float32 and not equal to it (autocast's stock: ~1 %, its own)
        assert 1e-4 < variants["vos_bf16"]["rel_error_embeddings"] <= 1e-2
        assert 1e-4 < variants["stock_bf16"]["rel_error_embeddings"] <= 3e-2
        # the speed-up is the ratio of the reported medians (its size is the benchmark's to measure, not a test's)
        assert result["speedup_vos_bf16_over_vos_wall"] == pytest.approx(
            vos["wall_median_s"] / variants["vos_bf16"]["wall_median_s"], rel=1e-12)
    # the stock global block materialises three 2×4096×4096 float32 tensors (134 MB each); the fused one does not
    assert vos["peak_rss_increase_mib"] < stock["peak_rss_increase_mib"]
    assert stock["peak_rss_increase_mib"] > 250
    printed = capsys.readouterr()
    assert "vs stock wall / CPU" in printed.out and "peak RSS" in printed.out
    assert printed.out.startswith(f"CPU {result['cpu']['model']} (")       # the machine the figures are from
    assert bf16 or "bf16 variants skipped: this CPU" in printed.err


def test_bench_tool_rejects_bad_arguments(capsys):
    from vos.cli.common import run

    bench = _bench_module()
    assert run(bench.main, ["--model", "tiny", "--runs", "0"]) == 2
    assert run(bench.main, ["--model", "tiny", "--variants", "stock,fp16"]) == 2
    assert "--variants: unknown variant(s) fp16" in capsys.readouterr().err
    assert run(bench.main, ["--model", "tiny", "--image", "/nonexistent/frame.jpg"]) == 2
    assert "error: frame /nonexistent/frame.jpg does not exist" in capsys.readouterr().err
