"""The train stage on shape-only models (configs/models/*-shape.yaml: an architecture from config.json, random
weights, Qwen2.5's tokenizer): the GPU timing configs run unchanged on CPU at a toy size, through the
real ``accelerate launch -m train`` (one process, and two processes with gloo DDP), and their reports carry what
bench/gpu_train.sh collects (steady tokens/s, peak memory per rank, the parallel setup)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragroute.config import REPO_ROOT, load_config
from ragroute.errors import UserError
from train.config import TrainConfig
from train.main import main
from train.student_init import resolve_model_ref

SFT_GPU = "configs/train/qwen2.5-1.5b-shape_sft_gpu.yaml"
KD_GPU = "configs/train/qwen2.5-7b-shape_to_1.5b-shape_kd_gpu.yaml"
SEQ = 256  # every shape record is longer, so every example is cut to exactly this many tokens
TINY = ["--student.model", "qwen2-tiny-shape", "--max-length", str(SEQ), "--gradient-accumulation-steps", "1"]


@pytest.fixture(scope="module")
def shape_records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shape") / "records.jsonl"
    command = [sys.executable, "bench/shape_records.py", "--out", str(out), "--n", "12", "--docs", "1",
               "--max-chars", "300", "--answer-tokens", "200"]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    return out


def _launch(accelerate_config: str, train_config: str, data: Path, out: Path, *flags: str, processes: int = 1,
            log: list[str] | None = None):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config,
        "--num_processes", str(processes), "--num_cpu_threads_per_process", "1", "--main_process_port", "0",
        "-m", "train", "--config", train_config, "--data", str(data), "--output-dir", str(out),
        "--max-steps", "2", "--eval-fraction", "0.2", *TINY, *flags,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    if log is not None:
        log.append(done.stderr)
    return json.loads((out / "train_report.json").read_text())


def test_shape_model_refs_name_their_stand_in_tokenizer():
    ref = resolve_model_ref("qwen2.5-1.5b-shape")
    assert ref.shape_only and ref.tokenizer == "ragroute:qwen2.5-tokenizer"
    assert (Path(ref.path) / "config.json").is_file() and not list(Path(ref.path).glob("*.safetensors"))
    assert not resolve_model_ref("smollm2-135m").shape_only


def test_a_shape_only_teacher_for_a_real_student_is_refused(tmp_path: Path, shape_records: Path, tiny_model_dir: Path):
    overrides = [f"data={shape_records}", f"output_dir={tmp_path / 'run'}", "student.model=qwen2-tiny-shape",
                 f"teacher={tiny_model_dir}", "loss.name=forward_kl", f"max_length={SEQ}", "max_steps=1"]
    with pytest.raises(UserError, match="shape-only"):
        main(load_config(TrainConfig, REPO_ROOT / KD_GPU, overrides))


@pytest.mark.slow
def test_the_gpu_sft_config_runs_under_accelerate_on_cpu(tmp_path: Path, shape_records: Path):
    out = tmp_path / "sft"
    report = _launch("configs/accelerate/cpu.yaml", SFT_GPU, shape_records, out, "--per-device-batch-size", "2")
    assert report["steps"] == 2 and report["loss"] == "sft" and report["shape_only"] is True
    assert report["student"]["shape_only"] is True and report["student"]["source"].endswith("shapes/qwen2-tiny")
    assert report["world_size"] == 1 and report["distributed_type"] == "NO"
    assert report["tokens_per_step"] == 2 * SEQ  # batch 2 x a fixed sequence length
    assert report["steady_tokens_per_s"] > 0 and len(report["step_s"]) == 2
    assert len(report["peak_memory_gb_per_rank"]) == 1 and report["peak_memory_gb"] > 0
    # save_steps 0 in the timing config: no resumable checkpoint, only the final model
    assert not list(out.glob("checkpoint-*"))
    assert json.loads((out / "final" / "config.json").read_text())["hidden_size"] == 128


@pytest.mark.slow
def test_the_gpu_kd_config_runs_in_two_processes_with_ddp_on_cpu(tmp_path: Path, shape_records: Path):
    log: list[str] = []
    report = _launch("configs/accelerate/multi_gpu_ddp.yaml", KD_GPU, shape_records, tmp_path / "kd",
                     "--teacher", "qwen2-tiny-shape", "--per-device-batch-size", "1", processes=2, log=log)
    # Every parameter of the student takes part in each step: DDP is told so (the device run showed transformers'
    # default find_unused_parameters=True, an extra autograd traversal per step), and the processes end cleanly.
    assert "find_unused_parameters=True was specified" not in log[0]
    assert "destroy_process_group() was not called" not in log[0]
    assert report["steps"] == 2 and report["loss"] == "jsd" and report["shape_only"] is True
    assert report["world_size"] == 2 and report["distributed_type"] == "MULTI_CPU"
    assert report["tokens_per_step"] == 2 * SEQ  # two processes x batch 1, gathered
    assert report["steady_tokens_per_s_per_device"] == pytest.approx(report["steady_tokens_per_s"] / 2, abs=0.1)
    assert len(report["peak_memory_gb_per_rank"]) == 2 and min(report["peak_memory_gb_per_rank"]) > 0
    assert report["shared_vocab"] == 151936
    assert (tmp_path / "kd" / "final" / "model.safetensors").is_file()
