"""Structured pruning of a Qwen2 checkpoint (tied embeddings, q/k/v biases, bf16 on disk, max_window_layers): what
is kept computes exactly what it computed before, and the saved student is a checkpoint of the source's kind."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from ragroute.config import CONFIG_ROOT
from ragroute.models import PruneSpec, RandomInitSpec, random_checkpoint
from ragroute.pruning import prune_checkpoint


@pytest.fixture(scope="module")
def qwen2_student(tmp_path_factory):
    """A 4-layer random Qwen2 (151936 rows, tied embeddings, q/k/v biases, bf16) with Qwen2.5's tokenizer."""
    out = tmp_path_factory.mktemp("qwen2-student")
    random_checkpoint(RandomInitSpec(config=str(CONFIG_ROOT / "models" / "shapes" / "qwen2-tiny-student"),
                                     tokenizer="ragroute:qwen2.5-tokenizer", seed=3), out)
    return out


def logits(directory, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_pruning_nothing_changes_no_logit_of_a_tied_qwen2(qwen2_student, tmp_path):
    """Keeping every layer and neuron must reproduce the source exactly: tied embeddings and biases survive."""
    ids = torch.tensor([[151644, 872, 198, 9454, 13, 2753, 151645]])
    info = prune_checkpoint(str(qwen2_student), PruneSpec(source="x", method="layers", drop_layers=[],
                                                          calibration_texts=2, calibration_max_tokens=32), tmp_path)
    assert info["kept_layers"] == [0, 1, 2, 3]
    torch.testing.assert_close(logits(tmp_path, ids), logits(qwen2_student, ids), rtol=0, atol=0)


def test_pruned_qwen2_is_saved_like_its_source(qwen2_student, tmp_path):
    prune = PruneSpec(source="x", method="layers", drop_layers=[1, 2], intermediate_size=128, calibration_texts=2,
                      calibration_max_tokens=32)
    prune_checkpoint(str(qwen2_student), prune, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"], config["vocab_size"]) == (2, 128, 151936)
    assert config["tie_word_embeddings"] is True
    # Layers 0 and 3 were below the source's max_window_layers (4): both keep full attention.
    assert config["max_window_layers"] == 2 and config["layer_types"] == ["full_attention"] * 2
    with safe_open(tmp_path / "model.safetensors", "pt") as pruned, \
            safe_open(qwen2_student / "model.safetensors", "pt") as source:
        assert "lm_head.weight" not in pruned.keys()  # tied: the head is the embedding
        # bf16 like the source (float32 would double a 3B student on disk)
        assert pruned.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
        for name in ("q_proj", "k_proj", "v_proj"):  # source layer 3 is the student's layer 1, biases and all
            bias = source.get_tensor(f"model.layers.3.self_attn.{name}.bias")
            assert bias.abs().sum() > 0
            torch.testing.assert_close(pruned.get_tensor(f"model.layers.1.self_attn.{name}.bias"), bias)
