"""POST /v1/answer end to end: the real RAG pipeline over the bundled demo corpus, real routing, real engines."""

from __future__ import annotations

import json

import httpx
import pytest

from ragroute.rag.corpus import DEMO_CORPUS
from serve.config import ServeConfig

STAGES = {"retrieval", "rerank", "filter", "prompt", "route", "generation", "total"}


@pytest.fixture(scope="module")
def demo_titles() -> dict[str, str]:
    with DEMO_CORPUS.open() as fh:
        return {d["id"]: d["title"] for d in map(json.loads, fh)}


@pytest.fixture
def bm25_pipeline(tmp_path):
    """A BM25-only pipeline (no encoder to load) over the demo corpus, indexes under tmp_path."""
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 5\nfinal_n: 3\nindex_dir: {tmp_path / 'idx'}\n")
    return str(path)


@pytest.fixture
def answer_server(start_server, echo_upstream, tiny_backend, bm25_pipeline, upstream, sampled):
    # The echo student repeats the prompt's user message, which lists the documents as "[0] ID: title": a
    # deterministic answer with citations to resolve. The teacher is the tiny model (sampled: visible text).
    student = upstream(echo_upstream, name="echo-student")
    cfg = ServeConfig(student=student, teacher=tiny_backend("tiny-teacher"), pipeline=bm25_pipeline, sampling=sampled)
    return start_server(cfg)


def test_answer_routes_simple_question_to_student_with_citations(answer_server, demo_titles):
    response = httpx.post(f"{answer_server}/v1/answer", timeout=60, json={
        "question": "Which medication is usually recommended as the first-line oral drug for type 2 diabetes?",
        "options": {"include_documents": True}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["routed_to"] == body["answered_by"] == "student"
    assert body["router"] == {"score": 0.0, "threshold": 0.5, "source": "heuristic"}
    assert body["fallback"] is None
    docs = body["documents"]
    assert len(docs) == 3 and docs[0]["pmid"] == "DEMO-002"  # the question's own document ranks first
    # Every document is cited in the echoed prompt; each citation resolves to the document's id and title.
    assert [c["index"] for c in body["citations"]] == [0, 1, 2]
    for citation in body["citations"]:
        assert citation["pmid"] == docs[citation["index"]]["pmid"]
        assert citation["title"] == demo_titles[citation["pmid"]]
    assert STAGES <= set(body["timings"]) and all(v >= 0 for v in body["timings"].values())
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0


def test_answer_routes_yes_no_question_to_teacher(answer_server):
    body = httpx.post(f"{answer_server}/v1/answer", timeout=60, json={
        "question": "Do statins reduce LDL cholesterol and the risk of major cardiovascular events?",
        "options": {"max_tokens": 6}}).json()
    assert body["routed_to"] == body["answered_by"] == "teacher"
    assert body["model"] == "tiny-teacher"
    assert body["router"]["score"] == 1.0
    assert body["usage"]["completion_tokens"] <= 6
    assert body["documents"] is None


@pytest.mark.parametrize("forced", ["student", "teacher"])
def test_answer_model_can_be_forced(answer_server, forced):
    body = httpx.post(f"{answer_server}/v1/answer", timeout=60, json={
        "question": "Which vitamin deficiency causes scurvy?", "options": {"model": forced, "max_tokens": 4}}).json()
    assert body["routed_to"] == body["answered_by"] == forced
    assert body["router"]["source"] == "forced"


def test_answer_metrics_count_stages_and_routes(answer_server):
    httpx.post(f"{answer_server}/v1/answer", timeout=60, json={"question": "What causes scurvy?"})
    text = httpx.get(f"{answer_server}/metrics").text
    for stage in ("retrieval", "rerank", "filter", "prompt", "route", "generation"):
        assert f'ragroute_stage_latency_seconds_count{{stage="{stage}"}}' in text
    assert 'ragroute_requests_total{route="/v1/answer",status="200"}' in text
    assert 'ragroute_routed_total{model="student",source="heuristic"}' in text
