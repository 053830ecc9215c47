"""The single-stream latency pass on a real (tiny) model with the transformers engine and the demo corpus."""

from __future__ import annotations

import json

import pytest

from evaluation.config import EvalConfig
from evaluation.latency import Setup, _answer_one_by_one, measure_single_stream
from ragroute.engines.base import EngineConfig, SamplingConfig, create_engine
from ragroute.rag.corpus import load_corpus, load_questions
from ragroute.rag.pipeline import PipelineConfig, RAGPipeline


@pytest.fixture
def setup(tmp_path) -> Setup:
    pipeline = PipelineConfig(retriever="bm25", reranker="none", final_n=2, max_chars=200, index_dir=str(tmp_path / "idx"))
    return Setup(pipeline, SamplingConfig(max_tokens=4))


@pytest.fixture
def questions() -> list[tuple[str, str]]:
    return [(q.id, q.question) for q in load_questions("demo").items[:3]]


class CountingEngine:
    """The real engine, with the size of every generate() call written down."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def generate(self, requests, sampling):
        self.calls.append(len(requests))
        return self.engine.generate(requests, sampling)


def test_each_question_is_answered_alone(tiny_model_spec, setup, questions):
    engine = CountingEngine(create_engine(tiny_model_spec, EngineConfig.of("transformers", device="cpu")))
    measured = _answer_one_by_one(RAGPipeline(setup.pipeline, load_corpus("demo")), engine, questions, setup.sampling)
    assert engine.calls == [1] * (len(questions) + 1)  # a warm-up question, then one call per question
    assert list(measured.timings) == [qid for qid, _ in questions]
    for qid, timings in measured.timings.items():
        assert set(timings) >= {"retrieval", "rerank", "filter", "prompt", "generation"}
        assert timings["generation"] > 0 and 1 <= measured.tokens[qid] <= 4


def test_measurements_are_cached_by_what_affects_them(tiny_model_dir, tmp_path, setup, questions):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(f"name: tiny\npath: {tiny_model_dir}\ndtype: float32\nmax_model_len: 2048\n")
    cfg = EvalConfig(engine=EngineConfig.of("transformers", device="cpu"))
    corpus, cache = load_corpus("demo"), tmp_path / "latency"
    first = measure_single_stream(str(spec), cfg, questions, corpus, {"student": setup}, cache)["student"]
    saved = cache / "student.json"
    stamp, identity = saved.stat().st_mtime_ns, json.loads(saved.read_text())["identity"]
    again = measure_single_stream(str(spec), cfg, questions, corpus, {"student": setup}, cache)["student"]
    assert again.timings == first.timings and saved.stat().st_mtime_ns == stamp  # reused, not remeasured
    longer = Setup(setup.pipeline, SamplingConfig(max_tokens=6))
    measure_single_stream(str(spec), cfg, questions, corpus, {"student": longer}, cache)
    assert saved.stat().st_mtime_ns != stamp and json.loads(saved.read_text())["identity"] != identity
    fewer = measure_single_stream(str(spec), cfg, questions[:2], corpus, {"student": longer}, cache)["student"]
    assert list(fewer.timings) == [qid for qid, _ in questions[:2]]
