"""dtype follows the hardware, and RAGROUTE_CPU_BF16 makes one machine behave as a CPU with or without bf16."""

from __future__ import annotations

import pytest

from ragroute import hardware
from ragroute.errors import UserError


@pytest.mark.parametrize("forced, expected", [("0", "float32"), ("1", "bfloat16")])
def test_cpu_bf16_can_be_forced_either_way(monkeypatch, forced, expected):
    monkeypatch.setattr(hardware, "has_cuda", lambda: False)  # the CPU path, also on a GPU machine
    monkeypatch.setenv(hardware.CPU_BF16_ENV, forced)
    assert hardware.pick_dtype("auto") == expected
    assert hardware.pick_dtype("float32") == "float32"  # an explicit dtype is never changed


def test_unset_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(hardware, "has_cuda", lambda: False)
    monkeypatch.delenv(hardware.CPU_BF16_ENV, raising=False)
    native = any(flag in hardware.cpu_flags() for flag in ("avx512_bf16", "amx_bf16"))
    assert hardware.pick_dtype("auto") == ("bfloat16" if native else "float32")


def test_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "yes")
    with pytest.raises(UserError, match="RAGROUTE_CPU_BF16 must be 0 or 1"):
        hardware.cpu_has_native_bf16()
