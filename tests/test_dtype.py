"""The engine dtype chosen for the machine: float32 on CPUs without native bf16, bf16 where native, model's on GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapreduce_llm.config import VLLMEngineConfig
from mapreduce_llm.engines.dtype import choose_dtype, cpu_flags, native_bf16


def test_auto_is_the_default() -> None:
    """A job that says nothing about dtype lets the engine's machine decide."""
    assert VLLMEngineConfig().dtype == "auto"


@pytest.mark.parametrize(
    ("gpu", "bf16", "expected"),
    [(True, False, "auto"), (False, True, "bfloat16"), (False, False, "float32")],
)
def test_auto_resolves_by_hardware(gpu: bool, bf16: bool, expected: str) -> None:
    """GPU: the model's own dtype; CPU: bf16 only where the CPU computes it natively."""
    dtype, reason = choose_dtype("auto", gpu=gpu, bf16=bf16)
    assert dtype == expected
    assert reason


def test_explicit_dtype_is_kept() -> None:
    """An explicit engine.dtype is passed through whatever the hardware."""
    assert choose_dtype("bfloat16", gpu=False, bf16=False) == ("bfloat16", "set in engine.dtype")


def test_cpu_flags_read_from_cpuinfo(tmp_path: Path) -> None:
    """x86 'flags' and Arm 'Features' lines both name the CPU's features; bf16 flags mean native bf16."""
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert "avx512f" in cpu_flags(x86)
    assert not native_bf16(cpu_flags(x86))
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert native_bf16(cpu_flags(arm))
    assert cpu_flags(tmp_path / "missing") == frozenset()
