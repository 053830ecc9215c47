"""Slow: the shipped offline config's models (SmolLM2 teacher, pruned student) answering through the server, on
the in-process transformers backend and on the in-process vLLM async engine."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ragroute.engines.base import EngineConfig, SamplingConfig
from serve.backends import create_backend
from serve.config import BackendConfig, LimitsConfig, ServeConfig
from serve.service import within

pytestmark = pytest.mark.slow

QUESTION = "Do statins reduce LDL cholesterol?"


def test_smollm2_pair_answers_over_demo_corpus(start_server, teacher_dir, student_dir, tmp_path):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 5\nfinal_n: 3\n"
                        f"index_dir: {tmp_path / 'idx'}\n")
    cfg = ServeConfig(
        student=BackendConfig(model="smollm2-135m-pruned", timeout_s=600,
                              engine=EngineConfig.of("transformers", device="cpu")),
        teacher=BackendConfig(model="smollm2-135m", timeout_s=600,
                              engine=EngineConfig.of("transformers", device="cpu")),
        pipeline=str(pipeline), limits=LimitsConfig(request_timeout_s=600),  # a loaded CI machine is slow
    )
    url = start_server(cfg)
    ready = httpx.get(f"{url}/ready").json()
    assert (ready["student"], ready["teacher"]) == ("smollm2-135m-pruned", "smollm2-135m")
    body = httpx.post(f"{url}/v1/answer", timeout=120,
                      json={"question": QUESTION, "options": {"model": "teacher", "max_tokens": 24}}).json()
    assert body["answered_by"] == "teacher" and body["model"] == "smollm2-135m"
    assert body["answer"].strip() and 0 < body["usage"]["completion_tokens"] <= 24
    assert body["timings"]["generation"] > 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=120, json={
            "model": "student", "max_tokens": 12, "stream": True,
            "messages": [{"role": "user", "content": "Name one statin."}]}) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) > 3


def test_vllm_async_backend_streams_like_the_batch_engine_and_aborts_what_it_abandons(teacher_dir):
    # float32, deliberately: greedy texts are compared across batch shapes (one stream vs a batch of three), which
    # bf16 on CPUs with AVX512-BF16/AMX does not keep bit-identical.
    cfg = BackendConfig(model="smollm2-135m", dtype="float32",
                        engine=EngineConfig.of("vllm", kv_cache_memory_gb=0.25, max_num_seqs=8))
    messages = [{"role": "user", "content": "What is insulin?"}]
    sampling = SamplingConfig(max_tokens=12, temperature=0.0)
    endless = SamplingConfig(max_tokens=1500, min_tokens=1500, temperature=0.0)  # no EOS before 1,500 tokens

    async def run():
        backend = create_backend(cfg)
        await backend.start()
        try:
            chunks = [c async for c in backend.stream(messages, sampling)]
            together = await asyncio.gather(*(backend.complete(messages, sampling) for _ in range(3)))
            assert backend.context_length == 2048 and 5 < backend.count_prompt_tokens(messages) < 100
            await backend.check_health()
            # A stream closed early (the client left) and a generation past its timeout are aborted in the engine.
            stream = backend.stream(messages, endless)
            await anext(stream)
            await stream.aclose()
            closed_unfinished = backend.engine.output_processor.get_num_unfinished_requests()
            with pytest.raises(TimeoutError):
                await within(backend.complete(messages, endless), 0.5)
            timed_out_unfinished = backend.engine.output_processor.get_num_unfinished_requests()
        finally:
            await backend.close()
        assert (closed_unfinished, timed_out_unfinished) == (0, 0)
        return chunks, together

    chunks, together = asyncio.run(run())
    text = "".join(c.text for c in chunks)
    assert text.strip() and len([c for c in chunks if c.text]) >= 2  # streamed in pieces
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length") and 0 < last.completion_tokens <= 12 and last.prompt_tokens > 5
    assert all(c.text == text for c in together)  # greedy in float32: a batch of three answers as one stream did
