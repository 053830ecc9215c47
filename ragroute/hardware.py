"""What the machine can do, so dtype and device follow the hardware instead of a guess."""

from __future__ import annotations

import functools
import os
from pathlib import Path

# CPU flags that give torch/oneDNN native bfloat16 matmul. Without them bf16 is emulated and runs ~60x slower
# than float32 (measured 0.6 vs 36 GFLOP/s on an AVX2-only CPU), so float32 is the right choice there.
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


# Set to 0 or 1, it overrides what /proc/cpuinfo says about native bf16, so that one machine can run the tests
# (and ``dtype: auto``) as a CPU without AVX512-BF16/AMX would (float32), or as one with them (bfloat16).
CPU_BF16_ENV = "RAGROUTE_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        from ragroute.errors import UserError

        raise UserError(f"{CPU_BF16_ENV} must be 0 or 1 (unset: read the CPU's flags), not {forced!r}")
    return any(flag in cpu_flags() for flag in _CPU_BF16_FLAGS)


def mps_pipe_directory() -> Path:
    """Where CUDA clients look for the MPS control daemon's pipes (``nvidia-cuda-mps-control -d``)."""
    return Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps")


def mps_active() -> bool:
    """Whether a CUDA MPS control daemon serves this process's clients: it leaves a ``control`` pipe in the
    pipe directory while it runs. Under MPS, processes sharing a GPU run their kernels at the same time instead
    of taking turns in time slices."""
    return (mps_pipe_directory() / "control").exists()


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_dtype(requested: str = "auto") -> str:
    """Resolve ``auto`` to the fastest safe dtype name: bf16 on GPUs and CPUs that support it, else float32."""
    if requested != "auto":
        return requested
    if has_cuda():
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def torch_dtype(name: str):  # -> torch.dtype
    import torch

    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    resolved = pick_dtype(aliases.get(name, name))
    try:
        return getattr(torch, resolved)
    except AttributeError:
        from ragroute.errors import UserError

        raise UserError(f"unknown dtype '{name}' (use auto, float32, bfloat16 or float16)") from None
