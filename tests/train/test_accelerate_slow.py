"""A real short distillation of the converted SmolLM2 pair through ``accelerate launch -m train`` on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragroute.config import REPO_ROOT

from .conftest import demo_records, write_records


@pytest.mark.slow
def test_accelerate_launch_distills_the_smollm2_pair(tmp_path: Path, teacher_dir: Path, student_dir: Path):
    data = write_records(tmp_path / "records.jsonl", demo_records(8))
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu.yaml",
        "-m", "train", "--config", "configs/train/smollm2-135m_to_pruned_kd.yaml",
        "--data", str(data), "--output-dir", str(out), "--max-steps", "2", "--per-device-batch-size", "2",
        "--eval-fraction", "0.25", "--save-steps", "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == 2 and report["loss"] == "forward_kl"
    assert report["student"]["source"] == str(student_dir)
    assert report["shared_vocab"] == 49152  # teacher and pruned student share the SmolLM2 tokenizer
    assert report["eval_loss"] is not None and report["first_loss"] > 0
    assert (out / "checkpoint-2").is_dir()
    final = out / "final"
    marker = json.loads((final / "ragroute_model.json").read_text())
    assert marker["kind"] == "distilled"
    config = json.loads((final / "config.json").read_text())
    assert config["num_hidden_layers"] == json.loads((student_dir / "config.json").read_text())["num_hidden_layers"]
