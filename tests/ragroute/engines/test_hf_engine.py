"""The transformers engine answers with ragroute's sampling settings alone, never with the sampling defaults of the
model's generation_config.json (Qwen2.5-Instruct ships repetition_penalty 1.05 and top_k 20; vLLM ignores them)."""

from __future__ import annotations

import json

import pytest
import torch

from ragroute.config import CONFIG_ROOT
from ragroute.engines.base import EngineConfig, GenerationRequest, SamplingConfig, create_engine
from ragroute.models import ModelSpec, RandomInitSpec, random_checkpoint


@pytest.fixture(scope="module")
def qwen2_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("qwen2")
    random_checkpoint(RandomInitSpec(config=str(CONFIG_ROOT / "models" / "shapes" / "qwen2-tiny-student"),
                                     tokenizer="ragroute:qwen2.5-tokenizer", seed=5), out)
    # Qwen2.5-Instruct's 1.05, raised so that it visibly changes a random model's greedy answer.
    config = json.loads((out / "generation_config.json").read_text())
    assert config["repetition_penalty"] == 1.05
    (out / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 3.0}))
    return out


def test_greedy_answer_ignores_the_checkpoints_repetition_penalty(qwen2_checkpoint):
    messages = [{"role": "user", "content": "Do statins lower LDL cholesterol?"}]
    spec = ModelSpec(name="qwen2", path=str(qwen2_checkpoint), dtype="float32")
    with create_engine(spec, EngineConfig.of("transformers", device="cpu")) as engine:
        [result] = engine.generate([GenerationRequest(messages=messages)], SamplingConfig(max_tokens=24, stop=[]))
        tokenizer, model = engine.tokenizer, engine.model
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = {}
    for penalty in (1.0, 3.0):  # what vLLM does, and what the checkpoint's generation_config asks for
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=24, do_sample=False, repetition_penalty=penalty,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        generated[penalty] = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert generated[1.0] != generated[3.0]  # the random model repeats itself, so the penalty shows
    assert result.token_ids == generated[1.0][: len(result.token_ids)] and len(result.token_ids) > 4
