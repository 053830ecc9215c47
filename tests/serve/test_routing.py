"""Routing decisions: a real router fitted and saved with the router stage's API, and the no-router policies."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from ragroute.errors import UserError
from ragroute.rag.corpus import DEMO_QUESTIONS
from ragroute.routing import HeuristicRouter, needs_teacher
from serve.config import RoutingConfig
from serve.routing import expand_path, load_bundle, routing_policy


def load_question_router(cfg: RoutingConfig):
    return routing_policy(cfg, load_bundle(cfg))


@pytest.fixture(scope="module")
def router_file(tmp_path_factory):
    """A logistic-regression router fitted on the demo questions (label: yes/no/maybe questions are 'hard')."""
    from router.config import RouterConfig
    from router.fit import fit_router
    from router.labels import LabelledSet
    from router.persist import save_router

    rows = [json.loads(line) for line in DEMO_QUESTIONS.read_text().splitlines() if line.strip()]
    questions = [r["question"] for r in rows]
    hard = np.array([not q.lower().startswith(("what", "which", "when", "who", "where")) for q in questions])
    n = len(rows)
    signals = [{"top_score": 1.0 + i % 3, "margin": 0.1 * (i % 4)} for i in range(n)]
    labelled = LabelledSet(
        ids=[r["id"] for r in rows], questions=questions, signals=signals,
        student_quality=np.where(hard, 0.2, 0.8), teacher_quality=np.full(n, 0.8), teacher_needed=hard,
        student_generation_s=np.ones(n), teacher_generation_s=np.full(n, 3.0), student_total_s=np.ones(n),
        teacher_total_s=np.full(n, 3.0), teacher_records=[], data_hash="test",
    )
    bundle = fit_router(labelled, RouterConfig(cv_folds=3))
    return save_router(bundle, tmp_path_factory.mktemp("router") / "router.skops")


def test_bundle_router_scores_and_thresholds(router_file):
    router = load_question_router(RoutingConfig(router_path=str(router_file)))
    assert router.source == "router" and router.uses_signals
    easy = router.decide("What is the first-line drug for type 2 diabetes?")
    hard = router.decide("Does intensive blood pressure control reduce stroke in elderly patients?")
    assert easy.source == hard.source == "router"
    assert 0.0 <= easy.score < hard.score <= 1.0
    assert easy.threshold == hard.threshold == router.router.threshold
    assert hard.use_teacher == needs_teacher(hard.score, hard.threshold)
    forced_low = load_question_router(RoutingConfig(router_path=str(router_file), threshold=0.0))
    assert forced_low.decide("What is insulin?").use_teacher  # every score >= 0 -> teacher


def test_policies_without_router_file(tmp_path):
    missing = str(tmp_path / "absent.skops")
    teacher_only = load_question_router(RoutingConfig(router_path=missing, if_missing="teacher"))
    assert teacher_only.source == "teacher-only" and teacher_only.decide("What is insulin?").use_teacher
    heuristic = load_question_router(RoutingConfig(router_path=missing, if_missing="heuristic"))
    assert isinstance(heuristic.router, HeuristicRouter) and heuristic.source == "heuristic"
    assert not heuristic.decide("Which vitamin prevents scurvy?").use_teacher
    assert heuristic.decide("Is vitamin C effective against the common cold?").use_teacher
    with pytest.raises(UserError, match="router file not found"):
        load_question_router(RoutingConfig(router_path=missing, if_missing="error"))
    with pytest.raises(UserError, match="router_path is not set"):
        load_question_router(RoutingConfig(if_missing="error"))


def test_damaged_router_file_is_a_user_error(tmp_path):
    bad = tmp_path / "router.skops"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError):
        load_question_router(RoutingConfig(router_path=str(bad)))


def test_ragroute_home_expands(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGROUTE_HOME", str(tmp_path))
    assert expand_path("$RAGROUTE_HOME/demo/router.skops") == tmp_path / "demo" / "router.skops"
    assert expand_path("${RAGROUTE_HOME}/r.skops") == tmp_path / "r.skops"


def test_server_routes_with_router_file_and_retrieval_signals(router_file, start_server, echo_upstream, tiny_backend,
                                                              tmp_path, upstream, sampled):
    from serve.config import ServeConfig

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 4\nfinal_n: 3\n"
                        f"index_dir: {tmp_path / 'idx'}\n")
    cfg = ServeConfig(student=upstream(echo_upstream), teacher=tiny_backend(),
                      pipeline=str(pipeline), routing=RoutingConfig(router_path=str(router_file)), sampling=sampled)
    url = start_server(cfg)
    assert httpx.get(f"{url}/ready").json()["router"] == "router"
    results = {}
    for question in ("What is the first-line drug for type 2 diabetes?",
                     "Does intensive blood pressure control reduce stroke in elderly patients?"):
        body = httpx.post(f"{url}/v1/answer", json={"question": question, "options": {"max_tokens": 4}},
                          timeout=60).json()
        assert body["router"]["source"] == "router"
        assert body["routed_to"] == ("teacher" if body["router"]["score"] >= body["router"]["threshold"] else "student")
        results[question] = body["router"]["score"]
    easy, hard = results.values()
    assert easy < hard
    chat = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": "router", "max_tokens": 4, "messages": [{"role": "user", "content": "What is insulin?"}]}).json()
    assert chat["ragroute"]["router"]["source"] == "router"
