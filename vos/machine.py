"""What machine a benchmark ran on: the CPU model and the instruction sets that change torch's CPU speed.

Every ``tools/bench_*.py`` prints :meth:`CpuInfo.line` with its figures, since the CPU model of this project's
machines changes between sessions (AVX-512 and BF16 dot products exist on some of them only).
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

#: The /proc/cpuinfo flags reported (vector widths and the reduced-precision dot products).
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    """``model``: the CPU's model name (with its family and model numbers on x86); ``cpus``: CPUs this process
    may run on; ``flags``: those of :data:`FLAGS` the CPU has, in that order."""

    model: str
    cpus: int
    flags: tuple

    def line(self) -> str:
        """One line: ``CPU <model> (<n> CPUs; avx2, avx512f, …; no avx512_bf16, …)``."""
        missing = [f for f in FLAGS if f not in self.flags]
        parts = [", ".join(self.flags) or "none of " + ", ".join(FLAGS)]
        if missing and self.flags:
            parts.append("no " + ", ".join(missing))
        return f"CPU {self.model} ({self.cpus} CPUs; {'; '.join(parts)})"

    def to_dict(self) -> dict:
        return {**asdict(self), "flags": list(self.flags)}


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_info() -> CpuInfo:
    """The CPU this process runs on, read from ``/proc/cpuinfo`` (elsewhere ``platform.processor()``, no flags)."""
    fields: dict = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if not line.strip():
                break                                   # the first CPU's block is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    if "cpu family" in fields and "model" in fields:    # tells Zen 3 / 4 / 5 apart where the name is just "AMD EPYC"
        model += f", family {fields['cpu family']} model {fields['model']}"
    flags = set(fields.get("flags", "").split())
    return CpuInfo(model, usable_cpus(), tuple(f for f in FLAGS if f in flags))
