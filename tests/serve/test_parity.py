"""Parity (slow; real SmolLM2 pair, greedy, CPU): serve answers exactly what data_gen generated and eval evaluated.

One system is recorded by data_gen, carried by the router file, and rebuilt from it by eval and by serve (no
pipeline, sampling or model is configured for either). For a dozen demo questions the answer text from data_gen,
from eval (its own generation), from /v1/answer and from /v1/chat/completions (whole and streamed) is the same
string, and serve routes every question the way eval did.

data_gen and eval run unbatched here: the transformers batch face pads a batch on the left, and in float32 on CPU
that changes greedy text after a few tokens (e.g. "...cholesterol and the risk of" batched by 6 vs "...and
increase the risk" alone, for DEMO-001), so a batched run is not bit-identical to one question at a time on any
stack. Unbatched, the batch face, the streaming face and every serve endpoint agree token for token.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from ragroute.config import load_config
from ragroute.engines.base import EngineConfig
from ragroute.rag.corpus import DEMO_QUESTIONS
from ragroute.records import read_records

pytestmark = pytest.mark.slow

N_QUESTIONS = 12
# Verdict-first answers (sampling.verdict, part of the system) run the same chain on fewer questions.
MODES = {"plain": ([], N_QUESTIONS), "verdict-first": (["sampling.verdict.enabled=true"], 4)}
# Exercises the sampling options the issue found serve could not set: a stop string and a repetition penalty.
SYSTEM = ["pipeline.corpus=demo", "pipeline.retriever=bm25", "pipeline.reranker=none", "pipeline.retrieval_n=5",
          "pipeline.final_n=3", "pipeline.max_chars=400", "sampling.max_tokens=12", "sampling.stop=['\\n\\n']",
          "sampling.repetition_penalty=1.1", "sampling.temperature=0.0"]
MODELS = {"teacher": "smollm2-135m", "student": "smollm2-135m-pruned"}


def fit_router_on(teacher_dir: Path, student_dir: Path, out: Path) -> Path:
    """A logistic-regression router on the records' questions and retrieval signals (label: the question is not a
    short What/Which/... one), its threshold at the median score so both models answer, and the systems the
    records came from, recorded as `ragroute router fit` records them."""
    from ragroute.routing import retrieval_signals
    from router.config import RouterConfig
    from router.fit import fit_router
    from router.labels import LabelledSet
    from router.main import recorded_systems
    from router.persist import save_router

    rows = [json.loads(line) for line in DEMO_QUESTIONS.read_text().splitlines() if line.strip()]
    records = {r.id: r for r in read_records(teacher_dir)}
    questions = [r["question"] for r in rows]
    hard = np.array([not q.lower().startswith(("what", "which", "when", "who", "where")) for q in questions])
    signals = [retrieval_signals(records[r["id"]].doc_scores if r["id"] in records else []) for r in rows]
    n = len(rows)
    labelled = LabelledSet(
        ids=[r["id"] for r in rows], questions=questions, signals=signals, student_quality=np.where(hard, 0.2, 0.8),
        teacher_quality=np.full(n, 0.8), teacher_needed=hard, student_generation_s=np.ones(n),
        teacher_generation_s=np.full(n, 3.0), student_total_s=np.ones(n), teacher_total_s=np.full(n, 3.0),
        teacher_records=[], data_hash="parity",
    )
    bundle = fit_router(labelled, RouterConfig(cv_folds=3))
    ours = list(records.values())
    bundle.threshold = float(np.median(bundle.score([r.question for r in ours],
                                                    [retrieval_signals(r.doc_scores) for r in ours])))
    bundle.metadata["systems"] = recorded_systems(str(teacher_dir), str(student_dir))
    return save_router(bundle, out / "router.skops")


@pytest.fixture(scope="module", params=list(MODES))
def artifacts(request, tmp_path_factory):
    """data_gen answers of both models (batch face), the router file, and eval's own run built from it; plain and
    verdict-first."""
    from data_gen.config import DataGenConfig
    from data_gen.main import main as data_gen_main
    from evaluation.config import EvalConfig
    from evaluation.main import main as eval_main

    extra, n = MODES[request.param]
    root = tmp_path_factory.mktemp("parity")
    index = f"pipeline.index_dir={root / 'idx'}"
    common = ["questions=demo", f"limit={n}", "batch_size=1", "engine.name=transformers",
              "engine.transformers.device=cpu", index, *SYSTEM, *extra]
    for role, model in MODELS.items():
        data_gen_main(load_config(DataGenConfig, None, [*common, f"model_config={model}", f"out={root / role}"]))
    router = fit_router_on(root / "teacher", root / "student", root)
    # eval names its models and its router file only: pipeline and sampling come from the router file.
    result = eval_main(load_config(EvalConfig, None, [
        "dataset=demo", f"limit={n}", f"out={root / 'eval'}", f"teacher={MODELS['teacher']}",
        f"student={MODELS['student']}", f"router={router}", "batch_size=1", "engine.name=transformers",
        "engine.transformers.device=cpu", "bootstrap=0"]))
    return root, router, result, n


@pytest.fixture(scope="module")
def served(artifacts, tmp_path_factory):
    """serve, built from the router file alone (models, pipeline, sampling), with its indexes in a temp dir."""
    from serve.app import create_app
    from serve.config import BackendConfig, LimitsConfig, RoutingConfig, ServeConfig
    from serve.server import server_in_thread

    root, router, _, _ = artifacts
    engine = EngineConfig.of("transformers", device="cpu")
    cfg = ServeConfig(student=BackendConfig(engine=engine, timeout_s=600),
                      teacher=BackendConfig(engine=engine, timeout_s=600),
                      routing=RoutingConfig(router_path=str(router), if_missing="error"),
                      limits=LimitsConfig(request_timeout_s=600))
    # Where indexes live is not part of the system: the served pipeline is the recorded one, indexes in tmp.
    from ragroute.rag.pipeline import load_pipeline_config
    from ragroute.system import manifest_system

    recorded = manifest_system(root / "student")["pipeline"]
    pipeline = tmp_path_factory.mktemp("serve") / "pipeline.yaml"
    pipeline.write_text(json.dumps({**recorded, "index_dir": str(root / "idx")}))
    load_pipeline_config(str(pipeline))  # it loads
    cfg.pipeline = str(pipeline)
    with server_in_thread(create_app(cfg)) as url:
        while (ready := httpx.get(f"{url}/ready")).status_code != 200:
            assert not ready.json()["error"], ready.json()["error"]
            threading.Event().wait(0.2)
        yield url


def by_id(directory: Path) -> dict[str, str]:
    return {r.id: r.answer for r in read_records(directory)}


def stream_text(url: str, body: dict) -> str:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=600) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, events[:-1]) if c["choices"])


def test_serve_builds_the_recorded_system(artifacts, served):
    root, router, result, _ = artifacts
    health = httpx.get(f"{served}/health").json()
    recorded = json.loads((root / "student" / "manifest.json").read_text())["system_hash"]
    assert health["system"]["student"]["hash"] == recorded and health["system"]["student"]["override"] is None
    assert health["system"]["teacher"]["hash"] == json.loads((root / "teacher" / "manifest.json").read_text())[
        "system_hash"]
    assert result["system"]["student"]["hash"] == recorded  # eval rebuilt the same system


def test_answers_and_routing_are_identical_everywhere(artifacts, served):
    root, _, result, n = artifacts
    data_gen = {role: by_id(root / role) for role in MODELS}
    verdicts = {role: {r.id: r.verdict for r in read_records(root / role)} for role in MODELS}
    evaluated = {role: by_id(root / "eval" / "answers" / role) for role in MODELS}
    prompts = {r.id: r for r in read_records(root / "teacher")}
    decisions = {d["id"]: d for d in result["decisions"]}
    assert len(decisions) == n and {d["routed_to"] for d in decisions.values()} == {"student", "teacher"}
    for qid, decision in decisions.items():
        role, record = decision["routed_to"], prompts[qid]
        answer = httpx.post(f"{served}/v1/answer", json={"question": record.question}, timeout=600).json()
        assert (answer["routed_to"], answer["answered_by"]) == (role, role), qid
        assert answer["router"]["score"] == pytest.approx(decision["score"], abs=1e-9)
        chat = {"model": role, "messages": record.messages}
        whole = httpx.post(f"{served}/v1/chat/completions", json=chat, timeout=600).json()
        texts = {"data_gen": data_gen[role][qid], "eval": evaluated[role][qid], "/v1/answer": answer["answer"],
                 "chat": whole["choices"][0]["message"]["content"], "chat stream": stream_text(served, chat)}
        assert len(set(texts.values())) == 1, (qid, texts)
        assert answer["verdict"] == verdicts[role][qid]  # None in plain mode; verdict-first: the same verdict
