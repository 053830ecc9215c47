"""Generation engines on real models: the tiny random Llama (fast) and the converted SmolLM2 (slow)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from ragroute.engines.base import EngineConfig, GenerationRequest, SamplingConfig, create_engine
from ragroute.errors import UserError
from ragroute.models import load_tokenizer

QUESTION = [
    {"role": "system", "content": "You are a biomedical expert. Answer concisely."},
    {"role": "user", "content": "Which mosquito genus transmits malaria to humans?"},
]


def chat_prompt_ids(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_spec):
    engine = create_engine(tiny_model_spec, EngineConfig.of("transformers", batch_size=2))
    yield engine
    engine.close()


def test_unknown_engine_is_a_user_error(tiny_model_spec):
    with pytest.raises(ValueError, match="unknown engine"):
        EngineConfig(name="nope")
    cfg = EngineConfig()
    cfg.name = "nope"
    with pytest.raises(UserError, match="unknown engine 'nope'"):
        create_engine(tiny_model_spec, cfg)


def test_transformers_batches_and_counts_tokens(tiny_engine, tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    requests = [
        GenerationRequest(messages=QUESTION),
        GenerationRequest(prompt="Aspirin is"),
        GenerationRequest(messages=[{"role": "user", "content": "Short?"}]),
    ]
    results = tiny_engine.generate(requests, SamplingConfig(max_tokens=7, logprobs=3))
    assert len(results) == 3
    assert results[0].prompt_tokens == len(chat_prompt_ids(tokenizer, QUESTION))
    assert results[1].prompt_tokens == len(tokenizer("Aspirin is", add_special_tokens=False).input_ids)
    for result in results:
        assert 1 <= result.completion_tokens <= 7 == max(7, result.completion_tokens)
        assert result.completion_tokens == len(result.token_ids)
        assert result.finish_reason in ("stop", "length")
        assert result.finish_reason == "length" or result.completion_tokens < 7 or result.token_ids[-1] == tokenizer.eos_token_id
        assert result.ttft_s is not None and 0 < result.ttft_s <= result.total_s
        assert len(result.logprobs) == result.completion_tokens
        for token, step in zip(result.token_ids, result.logprobs, strict=True):
            assert token in step and all(lp <= 0 for lp in step.values())


def test_greedy_is_deterministic_across_batching(tiny_engine):
    sampling = SamplingConfig(max_tokens=6)
    alone = tiny_engine.generate([GenerationRequest(messages=QUESTION)], sampling)[0]
    batched = tiny_engine.generate(
        [GenerationRequest(messages=[{"role": "user", "content": "a much longer other question " * 3}]),
         GenerationRequest(messages=QUESTION)],
        sampling,
    )[1]
    assert alone.token_ids == batched.token_ids  # left padding does not change the answer


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["transformers", "vllm"])
def test_smollm2_answers_a_biomedical_question(engine_name, teacher_spec, teacher_dir, request):
    tokenizer = load_tokenizer(str(teacher_dir))
    if engine_name == "vllm":
        engine = request.getfixturevalue("vllm_teacher")
    else:
        engine = create_engine(teacher_spec, EngineConfig(name="transformers"))
    free, stopped = engine.generate(
        [GenerationRequest(messages=QUESTION)], SamplingConfig(max_tokens=48)
    ) + engine.generate([GenerationRequest(messages=QUESTION)], SamplingConfig(max_tokens=48, stop=["."]))
    assert free.text.strip()
    assert "anopheles" in free.text.lower()
    assert free.prompt_tokens == len(chat_prompt_ids(tokenizer, QUESTION))
    assert free.completion_tokens == len(free.token_ids) <= 48
    # The text is what the tokens decode to (special tokens such as <|im_end|> aside).
    assert tokenizer.decode(free.token_ids, skip_special_tokens=True).strip() == free.text.strip()
    assert "." in free.text and "." not in stopped.text
    assert free.text.startswith(stopped.text)
    assert stopped.finish_reason == "stop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(teacher_dir, teacher_dtype):
    """A real OpenAI-compatible vLLM server on 127.0.0.1 serving the converted SmolLM2, in the dtype the offline
    engine (``vllm_teacher``) runs in, so that the two differ only in how they batch and schedule."""
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(teacher_dir),
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", teacher_dtype, "--enforce-eager", "--max-model-len", "2048", "--kv-cache-memory-bytes", str(1 << 29)]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm server exited: {proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(2)
    else:
        proc.kill()
        pytest.fail("vllm server did not become healthy in 300 s")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=60)


@pytest.mark.slow
def test_openai_engine_against_real_vllm_server(vllm_server, teacher_spec, teacher_dir):
    tokenizer = load_tokenizer(str(teacher_dir))
    engine = create_engine(teacher_spec, EngineConfig.of("openai", base_url=vllm_server, served_model_name="smollm2"))
    chat, plain = engine.generate(
        [GenerationRequest(messages=QUESTION), GenerationRequest(prompt="Malaria is transmitted by")],
        SamplingConfig(max_tokens=32, stop=["\n\n"]),
    )
    assert "anopheles" in chat.text.lower()
    assert chat.prompt_tokens == len(chat_prompt_ids(tokenizer, QUESTION))
    assert 0 < chat.completion_tokens <= 32
    assert chat.ttft_s is not None and chat.ttft_s <= chat.total_s
    assert plain.text.strip() and "\n\n" not in plain.text
    with pytest.raises(UserError, match="logprobs"):
        engine.generate([GenerationRequest(messages=QUESTION)], SamplingConfig(logprobs=2))
    engine.close()


def test_openai_engine_fails_fast_on_dead_server(tiny_model_spec):
    engine = create_engine(
        tiny_model_spec,
        EngineConfig.of("openai", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1, timeout_s=5),
    )
    import openai

    with pytest.raises(openai.APIConnectionError):
        engine.generate([GenerationRequest(messages=QUESTION)], SamplingConfig(max_tokens=4))


def test_openai_engine_needs_a_url(tiny_model_spec):
    with pytest.raises(UserError, match="base_url"):
        create_engine(tiny_model_spec, EngineConfig(name="openai"))


def test_streaming_face_joins_to_the_batch_face_text(tiny_engine, tiny_model_spec):
    """Same model, same sampling (a stop string, a repetition penalty, min_tokens, a seeded sample): the streamed
    pieces join to exactly the batch text, the stop string never reaches the client, the counts agree."""
    import asyncio

    from ragroute.engines.base import create_streaming_engine

    messages = [{"role": "user", "content": "Which mosquito genus transmits malaria to humans?"}]
    runs = [SamplingConfig(max_tokens=24, temperature=1.0, seed=seed, stop=[stop], repetition_penalty=1.3,
                           min_tokens=2) for seed, stop in ((1, "e"), (2, "a "), (3, "\n"))]
    batch = [tiny_engine.generate([GenerationRequest(messages=messages)], s)[0] for s in runs]

    async def stream_all():
        engine = create_streaming_engine(tiny_model_spec, EngineConfig.of("transformers", device="cpu"))
        await engine.start()
        try:
            streams = []
            for sampling in runs:
                streams.append([c async for c in engine.stream(messages, sampling)])
            return streams
        finally:
            await engine.close()

    for sampling, result, chunks in zip(runs, batch, asyncio.run(stream_all()), strict=True):
        text = "".join(c.text for c in chunks)
        assert text == result.text and sampling.stop[0] not in text
        last = chunks[-1]
        assert (last.finish_reason, last.completion_tokens, last.prompt_tokens) == (
            result.finish_reason, result.completion_tokens, result.prompt_tokens)
    assert any(r.finish_reason == "stop" and r.completion_tokens < 24 for r in batch)  # a stop string cut one


def test_openai_request_body_carries_every_sampling_option():
    from ragroute.engines.openai_engine import request_body

    body = request_body(SamplingConfig(max_tokens=9, min_tokens=2, temperature=0.5, top_p=0.9, stop=["\n\n"],
                                       repetition_penalty=1.1, seed=7))
    assert {k: body[k] for k in ("max_tokens", "min_tokens", "temperature", "top_p", "stop",
                                 "repetition_penalty", "seed")} == {
        "max_tokens": 9, "min_tokens": 2, "temperature": 0.5, "top_p": 0.9, "stop": ["\n\n"],
        "repetition_penalty": 1.1, "seed": 7}


def test_streaming_face_writes_the_same_verdict_first_answer_as_the_batch_face(tiny_engine, tiny_model_spec):
    """Verdict-first on both faces of the transformers engine: the same verdict, probabilities and joined text;
    the stream's last chunk carries the verdict; nothing is streamed before the verdict step is done (the first
    chunk already opens with the verdict)."""
    import asyncio

    from ragroute.engines.base import create_streaming_engine
    from ragroute.verdict import VerdictConfig

    messages = [{"role": "user", "content": "Do statins lower LDL cholesterol? Answer yes, no or maybe."}]
    sampling = SamplingConfig(max_tokens=10, stop=["\n\n"], verdict=VerdictConfig(enabled=True, min_explanation_tokens=3))
    batch = tiny_engine.generate([GenerationRequest(messages=messages)], sampling)[0]
    assert batch.verdict in ("yes", "no", "maybe") and batch.text.startswith(batch.verdict.capitalize() + ".")
    assert sum(batch.verdict_probs.values()) == pytest.approx(1.0)
    assert set(batch.timings) == {"verdict", "explanation"}

    async def stream():
        engine = create_streaming_engine(tiny_model_spec, EngineConfig.of("transformers", device="cpu"))
        await engine.start()
        try:
            chunks = [c async for c in engine.stream(messages, sampling)]
            step = await engine.verdict(messages, sampling)
            continued = await engine.complete(messages, sampling, after=step)
            return chunks, step, continued
        finally:
            await engine.close()

    chunks, step, continued = asyncio.run(stream())
    assert chunks[0].text.startswith(batch.verdict.capitalize() + ".")
    assert "".join(c.text for c in chunks) == batch.text == continued.text
    assert (chunks[-1].verdict, chunks[-1].completion_tokens) == (batch.verdict, batch.completion_tokens)
    assert chunks[-1].verdict_probs == pytest.approx(batch.verdict_probs, abs=1e-4)
    assert step.verdict == batch.verdict and step.probs == pytest.approx(batch.verdict_probs, abs=1e-4)


def test_verdict_settings_are_part_of_the_system_hash():
    """Switching verdict-first answers on, and the calibrated offsets, change the system spec's hash; a system
    without them hashes as before they existed."""
    from ragroute.models import ModelSpec
    from ragroute.rag.config import PipelineConfig
    from ragroute.system import SystemSpec
    from ragroute.verdict import VerdictConfig

    forced = VerdictConfig(enabled=True, bias={"yes": 0.0, "no": 0.0, "maybe": 50.0})
    model, pipeline = ModelSpec(name="m", path="p"), PipelineConfig()
    hashes = {SystemSpec(model, pipeline, SamplingConfig(verdict=v)).hash()
              for v in (VerdictConfig(), VerdictConfig(enabled=True), forced)}
    assert len(hashes) == 3
    plain = SystemSpec(model, pipeline, SamplingConfig())
    assert "verdict" not in plain.to_dict()["sampling"]  # systems recorded before verdicts keep their hash
    recorded = SystemSpec(model, pipeline, SamplingConfig(verdict=forced)).to_dict()
    assert SystemSpec.from_dict(recorded).sampling.verdict == forced


def test_openai_request_body_asks_for_the_verdict_constraint():
    from ragroute.engines.openai_engine import request_body

    body = request_body(SamplingConfig(allowed_token_ids=[5, 6], logprob_token_ids=[5, 6]),
                        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Yes."}])
    assert body["allowed_token_ids"] == [5, 6] and body["logprob_token_ids"] == [5, 6] and body["logprobs"] is True
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert "continue_final_message" not in request_body(SamplingConfig(), [{"role": "user", "content": "q"}])


@pytest.mark.slow
def test_openai_engine_verdict_first_against_real_vllm_server(vllm_server, teacher_spec, vllm_teacher,
                                                              same_teacher_verdict):
    """The server constrains the first token and returns the verdict-token logprobs: the same verdict and
    probabilities as the offline vLLM engine, as far as the dtype's rounding allows (bf16 differs between
    batch shapes on CPUs with AVX512-BF16/AMX)."""
    from ragroute.verdict import VerdictConfig

    engine = create_engine(teacher_spec, EngineConfig.of("openai", base_url=vllm_server, served_model_name="smollm2"))
    sampling = SamplingConfig(max_tokens=24, stop=["\n\n"], verdict=VerdictConfig(enabled=True))
    request = [GenerationRequest(messages=QUESTION)]
    remote, local = engine.generate(request, sampling)[0], vllm_teacher.generate(request, sampling)[0]
    same_teacher_verdict(remote, local)
    assert remote.text.startswith(remote.verdict.capitalize() + ".") and len(remote.text) > 6
    engine.close()


def test_vllm_prompts_of_a_batch_are_tokenized_in_one_call_with_the_same_ids(tiny_model_dir):
    """The vLLM engine tokenizes a batch's chat prompts in one tokenizer call; the ids are those of one prompt at a
    time, for a plain question and for a conversation ending in an assistant message that is continued."""
    from ragroute.engines.base import template_options
    from ragroute.engines.vllm_engine import chat_prompts

    tokenizer = load_tokenizer(str(tiny_model_dir))
    continued = [*QUESTION, {"role": "assistant", "content": "Anopheles"}]
    longer = [QUESTION[0], {"role": "user", "content": "Context: " + "malaria vector biology " * 200}]
    batch = chat_prompts(tokenizer, [QUESTION, continued, longer])
    one_at_a_time = [tokenizer.encode(tokenizer.apply_chat_template(m, tokenize=False, **template_options(m)),
                                      add_special_tokens=False) for m in (QUESTION, continued, longer)]
    assert [p["prompt_token_ids"] for p in batch] == one_at_a_time
    assert batch[0]["prompt_token_ids"] == chat_prompt_ids(tokenizer, QUESTION)
    text = tokenizer.apply_chat_template(continued, tokenize=False, continue_final_message=True)
    assert batch[1]["prompt_token_ids"] == tokenizer.encode(text, add_special_tokens=False)
    assert len(batch[2]["prompt_token_ids"]) > 600
    assert chat_prompts(tokenizer, []) == []  # a batch of requests that all carry their own token ids
