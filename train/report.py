"""What a run did, measured: per-step wall time, throughput, peak memory, losses -> ``train_report.json``."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ragroute.artifacts import write_json_atomic


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (device work included), for steady-state throughput."""

    def __init__(self) -> None:
        self.step_s: list[float] = []
        self._started = 0.0
        self.train_peak_gb: float | None = None  # this process's peak memory when training ended (before saving)

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.step_s.append(time.perf_counter() - self._started)

    def on_train_end(self, args, state, control, **kwargs):
        self.train_peak_gb = peak_memory()[0]


def peak_memory() -> tuple[float, str]:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on CPU, in GB."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "cpu_peak_rss"


def peak_memory_per_rank(accelerator: Any, local_gb: float) -> list[float]:
    """Every process's ``local_gb`` in rank order (a collective: every rank must call it)."""
    import torch

    local = torch.tensor([local_gb], dtype=torch.float64, device=accelerator.device)
    return [round(float(v), 3) for v in accelerator.gather(local).cpu()]


def parallel_setup(trainer: Any) -> dict[str, Any]:
    """How the run was spread over devices: what a throughput or memory number must be read with."""
    import torch

    acc = trainer.accelerator
    plugin = getattr(acc.state, "fsdp_plugin", None)
    return {
        "world_size": acc.num_processes,
        "distributed_type": str(acc.distributed_type).split(".")[-1],
        "fsdp_version": getattr(plugin, "fsdp_version", None) if plugin is not None else None,
        "mixed_precision": acc.mixed_precision,
        "device": torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else acc.device.type,
    }


def loss_history(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]


def build_report(
    trainer: Any, train_result: Any, eval_metrics: dict[str, float], timer: StepTimer, wall_s: float, extra: dict
) -> dict[str, Any]:
    history = loss_history(trainer.state.log_history)
    runtime = float(train_result.metrics.get("train_runtime", 0.0)) or wall_s
    tokens = int(getattr(trainer, "_total_train_tokens", 0))
    steady = sorted(timer.step_s[1:]) or sorted(timer.step_s)
    median_step = steady[len(steady) // 2] if steady else None
    memory_kind = peak_memory()[1]
    local_peak = timer.train_peak_gb if timer.train_peak_gb is not None else peak_memory()[0]
    per_rank = peak_memory_per_rank(trainer.accelerator, local_peak)
    steps = int(trainer.state.global_step)
    # tokens counts this launch's steps only (a resumed run starts past the checkpoint's)
    tokens_per_step = tokens / len(timer.step_s) if timer.step_s else None
    steady_tps = tokens_per_step / median_step if tokens_per_step and median_step else None
    return {
        "steps": steps,
        "first_loss": history[0][1] if history else None,
        "final_loss": history[-1][1] if history else None,
        "eval_loss": eval_metrics.get("eval_loss"),
        "tokens_per_s": tokens / runtime if runtime > 0 else None,
        # tokens of every process per optimizer step / the median step after the first (warm-up, compile)
        "steady_tokens_per_s": round(steady_tps, 1) if steady_tps else None,
        "steady_tokens_per_s_per_device": round(steady_tps / trainer.accelerator.num_processes, 1)
        if steady_tps else None,
        "tokens_per_step": tokens_per_step,
        "peak_memory_gb": max(per_rank),  # the largest process, at the end of training (saving not included)
        "peak_memory_gb_per_rank": per_rank,
        "peak_memory_kind": memory_kind,
        "wall_s": round(wall_s, 2),
        "train_runtime_s": round(runtime, 2),
        "train_tokens": tokens,
        "median_step_s": median_step,
        "step_s": [round(s, 4) for s in timer.step_s],
        "loss_history": history,
        "eval_metrics": eval_metrics,
        **extra,
    }


def write_report(output_dir: str | Path, report: dict[str, Any]) -> Path:
    return write_json_atomic(Path(output_dir) / "train_report.json", report)
