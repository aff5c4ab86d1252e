"""What the CPU computes natively, read from Linux's /proc/cpuinfo flags."""

from __future__ import annotations

from functools import cache
from pathlib import Path

# AVX512-BF16 (some Xeons and EPYCs) or AMX (Xeons since Sapphire Rapids).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@cache
def cpu_flags() -> frozenset[str]:
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux, or no /proc: nothing known
        return frozenset()


def native_bf16_cpu() -> bool:
    """Whether the CPU has bfloat16 instructions; elsewhere bfloat16 is emulated, and
    slower than float32."""
    return bool(cpu_flags() & BF16_FLAGS)
