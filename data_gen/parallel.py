"""``engine.vllm.data_parallel_size: N`` with the local executor: N worker processes, one per GPU (or GPU group of
``tensor_parallel_size``), each a ``ragroute data-gen --shard i/N`` run with ``CUDA_VISIBLE_DEVICES`` narrowed
to its GPUs; then the shards are merged. The out directory ends up as a hand-made sharded run's would
(records.shard-I-of-N.jsonl + manifests, merged records.jsonl + manifest.json), and a rerun resumes every shard.

vLLM's offline ``LLM`` runs one replica per process, so this is how data_gen uses N GPUs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from data_gen.config import DataGenConfig
from data_gen.merge import merge_shards
from ragroute.config import config_to_dict
from ragroute.errors import UserError

log = logging.getLogger("ragroute.data_gen")


def worker_limits(limit: int | None, count: int) -> list[int | None]:
    """Per-shard limits whose shards together hold exactly the first ``limit`` questions (shards are
    round-robin: shard i holds questions i, i+N, ...)."""
    if limit is None:
        return [None] * count
    if limit < count:
        raise UserError(f"limit {limit} is below engine.vllm.data_parallel_size {count}: some workers would have no "
                        "question; lower data_parallel_size")
    return [len(range(i, limit, count)) for i in range(count)]


def worker_environments(cfg: DataGenConfig) -> list[dict[str, str]]:
    """One environment per worker: its GPUs (``engine.vllm.devices`` split in groups of tensor_parallel_size, default
    the first N x TP visible) as ``CUDA_VISIBLE_DEVICES``. On a machine without GPUs the workers share the CPU."""
    from ragroute.hardware import has_cuda

    count, tp = cfg.engine.vllm.data_parallel_size, cfg.engine.vllm.tensor_parallel_size
    if not has_cuda():
        return [dict(os.environ) for _ in range(count)]
    import torch

    from ragroute.engines.vllm_engine import physical_devices

    ids = cfg.engine.vllm.gpu_ids()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    groups = [ids[i * tp : (i + 1) * tp] for i in range(count)]
    return [{**os.environ, "CUDA_VISIBLE_DEVICES": physical_devices(g, visible, torch.cuda.device_count())}
            for g in groups]


def run_data_parallel(cfg: DataGenConfig) -> dict:
    """Run the N workers, wait for all, merge their shards; a failed worker's records are kept for the rerun."""
    import yaml

    from ragroute.reaper import reap_descendants_on_exit

    reap_descendants_on_exit()  # the workers and their engines die with this process, even by SIGKILL
    count = cfg.engine.vllm.data_parallel_size
    envs = worker_environments(cfg)
    limits = worker_limits(cfg.limit, count)
    worker = config_to_dict(cfg)
    worker["engine"]["vllm"].update(data_parallel_size=1, devices=None)  # each worker: one replica on its own GPUs
    with tempfile.TemporaryDirectory(prefix="ragroute-dp-") as tmp:
        procs = []
        for index, (env, limit) in enumerate(zip(envs, limits, strict=True)):
            path = Path(tmp) / f"worker-{index}.yaml"
            path.write_text(yaml.safe_dump({**worker, "shard": f"{index}/{count}", "limit": limit}))
            log.info(f"data-gen: worker {index}/{count} on CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '')}")
            procs.append(subprocess.Popen([sys.executable, "-m", "ragroute.cli", "data-gen", "--config", str(path)],
                                          env=env))
        codes = [p.wait() for p in procs]
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        raise UserError(f"data-gen workers {failed} of {count} failed (exit codes {[codes[i] for i in failed]}); the "
                        f"records they wrote are kept in {cfg.out}: rerun the same command to finish them")
    counts = merge_shards(cfg.out)
    log.info(f"data-gen: merged {counts['records']} records of {count} workers into {cfg.out}/records.jsonl")
    return counts
