"""Which dtype an engine runs its weights in, decided on the machine where the engine runs.

``engine.dtype: auto`` (the default) means:

- on a GPU: the model's own dtype (vLLM's ``auto``, e.g. bfloat16 for most current checkpoints);
- on a CPU with native bfloat16 arithmetic (x86 ``avx512_bf16`` or AMX, Arm ``bf16``): bfloat16;
- on any other CPU: float32. Without native bf16, every bf16 matrix product is converted on the fly: on a
  2-core AVX2 EPYC a bf16 linear layer measured 6.6 times slower than float32, and the default example job did
  not finish one request in 24 minutes. ``benchmarks/dtype_ab.py`` measures both on the machine at hand.

The choice is made inside the engine actor (which may sit on another node than the driver) and logged.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

Dtype = Literal["auto", "bfloat16", "float16", "float32"]

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""CPU feature flags (``/proc/cpuinfo``) that mean bfloat16 arithmetic is native."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (x86 ``flags``, Arm ``Features``); empty if unknown."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when this CPU computes in bfloat16 natively (asks torch first, then the kernel's CPU flags)."""
    if flags is None:
        try:
            import torch

            if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
                return True
        except (ImportError, AttributeError):
            pass
        flags = cpu_flags()
    return bool(flags & CPU_BF16_FLAGS)


def choose_dtype(requested: Dtype, *, gpu: bool | None = None, bf16: bool | None = None) -> tuple[Dtype, str]:
    """The dtype to give vLLM for ``requested``, and why (for the engine's start log).

    ``gpu`` / ``bf16`` override the detection (tests); by default torch is asked whether CUDA is available
    and :func:`native_bf16` whether the CPU has bfloat16 arithmetic.
    """
    if requested != "auto":
        return requested, "set in engine.dtype"
    if gpu is None:
        try:
            import torch

            gpu = bool(torch.cuda.is_available())
        except ImportError:
            gpu = False
    if gpu:
        return "auto", "GPU: the model's own dtype"
    if bf16 is None:
        bf16 = native_bf16()
    cpu = platform.machine() or "CPU"
    if bf16:
        return "bfloat16", f"{cpu} CPU with native bfloat16"
    return (
        "float32",
        f"{cpu} CPU without native bfloat16 (no avx512_bf16/AMX): bf16 would be emulated, several times slower",
    )
