"""Numeric precision of the image encoder: ``"fp32"`` (exact, the default) or ``"bf16"`` (bfloat16 matmuls and
attention with float32 accumulation; residual stream, normalisations and everything after the encoder in float32).

bf16 pays only where the hardware has bfloat16 dot products: CUDA GPUs that support it, and CPUs with AVX512-BF16
or AMX-BF16. Elsewhere torch emulates them and a frame takes many times longer than in float32 (≥ 150 s per ViT-B
frame measured on Zen 3), so :func:`check_precision` refuses instead.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from vos.errors import InputError
from vos.machine import cpu_info

PRECISIONS = ("fp32", "bf16")
#: /proc/cpuinfo flags of the x86 instructions that give torch fast bfloat16 dot products on CPU.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_missing(device: Union[str, torch.device]) -> Optional[str]:
    """What ``device`` lacks for fast bfloat16 (one phrase), or None when it has it."""
    device = torch.device(device)
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no bfloat16 support"
    if device.type == "cpu":
        info = cpu_info()
        if any(f in info.flags for f in BF16_CPU_FLAGS):
            return None
        return (f"this CPU ({info.model}) has no bfloat16 dot-product instructions "
                f"(neither {' nor '.join(BF16_CPU_FLAGS)} in /proc/cpuinfo)")
    return f"bf16 is not supported on {device.type} devices"


def check_precision(precision: str, device: Union[str, torch.device]) -> None:
    """Raise :class:`InputError` if ``precision`` is unknown, or is ``"bf16"`` on a device without fast bfloat16."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    if precision == "bf16":
        missing = bf16_missing(device)
        if missing:
            raise InputError(f"--precision bf16: {missing}; it would run many times slower than fp32 here, "
                             f"use --precision fp32")
