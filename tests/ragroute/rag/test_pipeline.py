"""The whole pipeline over the demo corpus: configs, prepared prompts, timings, batching, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragroute.config import CONFIG_ROOT
from ragroute.errors import ConfigError, UserError
from ragroute.rag.pipeline import STAGES, PipelineConfig, RAGPipeline, load_pipeline_config


def test_prepare_returns_cited_documents_messages_and_timings(demo_pipeline, demo_questions):
    item = demo_questions[0]
    prepared = demo_pipeline.prepare(item.question)
    assert prepared.question == item.question
    assert prepared.docs[0].id == item.gold_doc_id
    assert 1 <= len(prepared.docs) <= demo_pipeline.cfg.final_n
    assert len({d.id for d in prepared.docs}) == len(prepared.docs)
    assert set(prepared.timings) == set(STAGES)
    assert all(seconds >= 0 for seconds in prepared.timings.values())
    assert prepared.messages[0]["role"] == "system"
    user = prepared.messages[-1]["content"]
    for i, doc in enumerate(prepared.docs):
        assert f"[{i}] {doc.id}: {doc.title}" in user
    assert user.index("[0]") < user.index("[1]") < user.index("Question:")


def test_every_demo_question_gets_its_document_first(demo_pipeline, demo_questions):
    prepared = demo_pipeline.prepare_batch([q.question for q in demo_questions])
    hits = sum(p.docs[0].id == q.gold_doc_id for p, q in zip(prepared, demo_questions, strict=True))
    assert hits / len(demo_questions) >= 0.95


def test_batch_matches_one_at_a_time(demo_pipeline, demo_questions):
    questions = [q.question for q in demo_questions[10:16]]
    batch = demo_pipeline.prepare_batch(questions)
    for question, prepared in zip(questions, batch, strict=True):
        single = demo_pipeline.prepare(question)
        assert [d.id for d in prepared.docs] == [d.id for d in single.docs]
        assert [d.score for d in prepared.docs] == pytest.approx([d.score for d in single.docs], abs=1e-5)
        assert prepared.messages == single.messages
        assert set(prepared.timings) == set(STAGES)
    assert demo_pipeline.prepare_batch([]) == []


def test_empty_questions_are_user_errors(demo_pipeline):
    with pytest.raises(UserError, match="question 1 is empty"):
        demo_pipeline.prepare_batch(["Does it work?", "   "])


def test_question_with_no_known_words_still_gets_a_prompt(demo_pipeline):
    prepared = demo_pipeline.prepare("zzqx wibblefrotz?")
    assert prepared.messages[-1]["content"].endswith("Question: zzqx wibblefrotz?\n\nAnswer:")
    assert set(prepared.timings) == set(STAGES)


@pytest.mark.parametrize("name,final_n,max_chars", [("v3", 15, 0), ("v3.1", 10, 800), ("cpu-demo", 3, 400)])
def test_shipped_configs(name: str, final_n: int, max_chars: int):
    cfg = load_pipeline_config(str(CONFIG_ROOT / "pipeline" / f"{name}.yaml"))
    assert (cfg.final_n, cfg.max_chars) == (final_n, max_chars)


def test_cpu_demo_config_builds_short_prompts(demo_questions, demo_index_dir: Path):
    cfg = load_pipeline_config("configs/pipeline/cpu-demo.yaml", [f"index_dir={demo_index_dir}"])
    pipeline = RAGPipeline.from_config(cfg)
    prepared = pipeline.prepare(demo_questions[4].question)
    assert len(prepared.docs) == 3
    assert (
        len(prepared.messages[-1]["content"]) < 3 * (400 + 120) + 300
    )  # three capped abstracts, headers, question


def test_bad_configs_are_clear_errors(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("retriever: bm25\nretrievel_n: 5\n")
    with pytest.raises(ConfigError, match="retrievel_n"):
        load_pipeline_config(str(bad))
    with pytest.raises(ConfigError, match="final_n"):
        load_pipeline_config(None, ["final_n=30"])
    with pytest.raises(ConfigError, match="retriever must be one of"):
        load_pipeline_config(None, ["retriever=splade"])
    with pytest.raises(ConfigError, match="reranker must be one of"):
        load_pipeline_config(None, ["reranker=colbert"])
    with pytest.raises(ConfigError, match=r"\{question\}"):
        load_pipeline_config(None, ["template='Context: {context}'"])
    with pytest.raises(ValueError, match="rerank_depth"):
        PipelineConfig(final_n=10, rerank_depth=5)


def test_config_without_corpus_and_empty_corpus_are_user_errors():
    with pytest.raises(UserError, match="no corpus"):
        RAGPipeline.from_config(PipelineConfig())
    with pytest.raises(UserError, match="at least one document"):
        RAGPipeline(PipelineConfig(), [])
