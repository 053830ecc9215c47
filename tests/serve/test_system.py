"""serve builds itself from its artifacts: the router file's recorded systems, the student checkpoint's training
data system; a configured difference is an error naming it, or, with system_override, logged and in /health."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from ragroute.engines.base import EngineConfig, SamplingConfig
from ragroute.errors import UserError
from ragroute.models import MARKER_FILE, ModelSpec
from ragroute.rag.config import PipelineConfig
from ragroute.system import SystemSpec
from serve.config import BackendConfig, RoutingConfig, ServeConfig
from serve.system import resolve_served

PIPELINE = PipelineConfig(corpus="demo", retriever="bm25", reranker="none", retrieval_n=4, final_n=2, max_chars=300)
SAMPLING = SamplingConfig(max_tokens=8, temperature=1.0, stop=["\n\n"], repetition_penalty=1.1)


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory, make_tiny_model):
    """A tiny student whose marker records the system that wrote its training data (as `ragroute train` does)."""
    path = make_tiny_model(tmp_path_factory.mktemp("student") / "final", num_layers=1, seed=2)
    teacher = ModelSpec(name="teacher", path="ragroute:smollm2-135m-instruct")
    (path / MARKER_FILE).write_text(json.dumps({"data_system": SystemSpec(teacher, PIPELINE, SAMPLING).to_dict()}))
    return path


@pytest.fixture(scope="module")
def recorded_router(tmp_path_factory, tiny_model_dir, student_checkpoint):
    """A router file whose labels came from the tiny teacher's and the student's answers with PIPELINE/SAMPLING."""
    from router.config import RouterConfig
    from router.fit import fit_router
    from router.labels import LabelledSet
    from router.persist import save_router

    questions = [f"{w} is drug {i}?" for i, w in enumerate(["What", "Does", "Which", "Is"] * 6)]
    hard = np.array([not q.startswith(("What", "Which")) for q in questions])
    n = len(questions)
    labelled = LabelledSet(
        ids=[str(i) for i in range(n)], questions=questions, signals=[{"top_score": 1.0}] * n,
        student_quality=np.where(hard, 0.2, 0.8), teacher_quality=np.full(n, 0.8), teacher_needed=hard,
        student_generation_s=np.ones(n), teacher_generation_s=np.ones(n), student_total_s=np.ones(n),
        teacher_total_s=np.ones(n), teacher_records=[], data_hash="test",
    )
    bundle = fit_router(labelled, RouterConfig(cv_folds=3))
    models = {"teacher": ModelSpec(name="tiny-teacher", path=str(tiny_model_dir), dtype="float32"),
              "student": ModelSpec(name="tiny-student", path=str(student_checkpoint), dtype="float32")}
    bundle.metadata["systems"] = {role: SystemSpec(m, PIPELINE, SAMPLING).to_dict() for role, m in models.items()}
    return str(save_router(bundle, tmp_path_factory.mktemp("router") / "router.skops"))


def config(router: str, **kwargs) -> ServeConfig:
    engine = EngineConfig.of("transformers", device="cpu")
    return ServeConfig(student=BackendConfig(engine=engine), teacher=BackendConfig(engine=engine),
                       routing=RoutingConfig(router_path=router, if_missing="error"), **kwargs)


def test_unset_models_pipeline_and_sampling_come_from_the_router_file(recorded_router, tiny_model_dir):
    from router.persist import load_router

    resolved = resolve_served(config(recorded_router), load_router(recorded_router))
    assert resolved["teacher"].spec.model.path == str(tiny_model_dir)
    assert resolved["student"].spec.pipeline.final_n == 2 and resolved["student"].spec.sampling.stop == ["\n\n"]
    assert not resolved["student"].differences and resolved["teacher"].source.endswith("router.skops")


def test_a_configured_difference_is_a_clear_error(recorded_router, tmp_path):
    from router.persist import load_router

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 5\nfinal_n: 5\nmax_chars: 300\n")
    bundle = load_router(recorded_router)
    with pytest.raises(UserError, match=r"student: .*pipeline\.final_n: 5 vs 2.*system_override"):
        resolve_served(config(recorded_router, pipeline=str(pipeline)), bundle)
    with pytest.raises(UserError, match=r"sampling\.stop: \[\] vs \['\\n\\n'\]"):
        resolve_served(config(recorded_router, sampling=SamplingConfig(max_tokens=8, temperature=1.0,
                                                                       repetition_penalty=1.1)), bundle)


def test_student_trained_on_another_pipeline_is_refused(recorded_router, tmp_path):
    """The router file matches what is served, the student checkpoint's training data does not."""
    from router.persist import load_router

    bundle = load_router(recorded_router)
    for record in bundle.metadata["systems"].values():
        record["pipeline"]["final_n"] = 3
    cfg = config(recorded_router)
    with pytest.raises(UserError, match=r"training data pipeline\.final_n: 3 vs 2"):
        resolve_served(cfg, bundle)


def test_override_is_logged_and_shown_in_health(recorded_router, tmp_path, start_server, caplog):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 4\nfinal_n: 3\nmax_chars: 300\n"
                        f"index_dir: {tmp_path / 'idx'}\n")
    with caplog.at_level("WARNING", logger="ragroute"):
        url = start_server(config(recorded_router, pipeline=str(pipeline), system_override=True))
    system = httpx.get(f"{url}/health").json()["system"]
    assert system["override"] is True
    assert "pipeline.final_n: 3 vs 2" in system["student"]["override"]
    assert any("training data pipeline.final_n: 3 vs 2" in d for d in system["student"]["override"])
    assert "system override" in caplog.text
    answer = httpx.post(f"{url}/v1/answer", json={"question": "Does aspirin reduce fever?"}, timeout=120).json()
    assert len(answer["citations"]) <= 3 and answer["usage"]["completion_tokens"] <= 8
