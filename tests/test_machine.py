"""vos.machine: the CPU line every benchmark prints (the machines' CPU model changes between sessions)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vos.machine import FLAGS, cpu_info


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="the CPU fields are read from Linux /proc/cpuinfo")
def test_cpu_line_names_the_model_and_which_vector_flags_this_cpu_has():
    first_cpu = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first_cpu.splitlines())}
    have = [f for f in FLAGS if f in fields.get("flags", "").split()]
    info = cpu_info()
    assert info.model.startswith(fields["model name"])
    assert info.flags == tuple(have) and info.cpus == len(os.sched_getaffinity(0))
    prefix = f"CPU {info.model} ({info.cpus} CPUs; "
    line = info.line()
    assert line.startswith(prefix) and line.endswith(")")
    present, _, missing = line[len(prefix):-1].partition("; no ")
    if have:
        assert present.split(", ") == have
        assert (missing.split(", ") if missing else []) == [f for f in FLAGS if f not in have]
    assert json.loads(json.dumps(info.to_dict()))["flags"] == have
