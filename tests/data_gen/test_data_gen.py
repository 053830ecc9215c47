"""data_gen end to end on real components: the RAG pipeline, real engines, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from data_gen.config import DataGenConfig
from data_gen.main import main
from data_gen.merge import merge_shards
from ragroute.config import load_config
from ragroute.errors import ConfigError, UserError
from ragroute.quality import parse_citations
from ragroute.records import iter_jsonl, read_records
from ragroute.system import SystemSpec


@pytest.fixture
def tiny_cfg(tiny_model_dir, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(f"name: tiny\npath: {tiny_model_dir}\ndtype: float32\nmax_model_len: 2048\n")

    def make(**overrides) -> DataGenConfig:
        base = [
            f"model_config={spec}", "questions=demo", "corpus=demo", f"out={tmp_path / 'out'}",
            "engine.name=transformers", "sampling.max_tokens=4", "batch_size=3", "limit=5",
            "pipeline.final_n=2", "pipeline.max_chars=200", f"pipeline.index_dir={tmp_path / 'idx'}",
        ]
        return load_config(DataGenConfig, None, base + [f"{k}={v}" for k, v in overrides.items()])

    return make


def test_writes_records_and_manifest_then_resumes(tiny_cfg, tmp_path):
    counts = main(tiny_cfg())
    out = tmp_path / "out"
    records = read_records(out)
    assert counts["written"] == 5 and [r.id for r in records] == ["Q-001", "Q-002", "Q-003", "Q-004", "Q-005"]
    first = records[0]
    assert first.model == "tiny" and len(first.doc_ids) == 2 and first.doc_ids[0] == first.gold_doc_id
    assert first.messages[0]["role"] == "system" and "[0]" in first.prompt and first.question in first.prompt
    assert set(first.timings) >= {"retrieval", "rerank", "filter", "prompt", "generation", "generation_share"}
    # Batches of 3: each question carries an equal share of its batch's generation wall time (for throughput).
    first_batch = records[:3]
    assert len({r.timings["generation_share"] for r in first_batch}) == 1
    assert all(3 * r.timings["generation_share"] >= r.timings["generation"] for r in first_batch)
    assert records[3].timings["generation_share"] != first.timings["generation_share"]
    assert 1 <= first.completion_tokens <= 4 and first.prompt_tokens > 20
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["questions"] == 5 and manifest["config_hash"] == first.config_hash
    assert "transformers" in manifest["versions"]
    system = manifest["system"]  # the system spec in full: what serve and eval rebuild from
    assert system["pipeline"]["final_n"] == 2 and system["pipeline"]["corpus"] == "demo"
    assert "index_dir" not in system["pipeline"] and system["sampling"]["max_tokens"] == 4
    assert system["model"]["path"] and manifest["system_hash"] == SystemSpec.from_dict(system).hash()

    before = (out / "records.jsonl").read_bytes()
    again = main(tiny_cfg(limit=7))
    assert again["already_done"] == 5 and again["written"] == 2
    after = (out / "records.jsonl").read_bytes()
    assert after.startswith(before)  # nothing already written is rewritten or lost
    assert len(read_records(out)) == 7


def test_refuses_to_mix_configs_unless_overwrite(tiny_cfg, tmp_path):
    main(tiny_cfg(limit=2))
    with pytest.raises(UserError, match="different config"):
        main(tiny_cfg(limit=2, **{"sampling.max_tokens": 5}))
    counts = main(tiny_cfg(limit=2, overwrite="true", **{"sampling.max_tokens": 5}))
    assert counts["written"] == 2 and len(read_records(tmp_path / "out")) == 2


def test_bad_questions_are_counted_and_skipped(tiny_cfg, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "\n".join(
            [
                json.dumps({"id": "ok1", "question": "Do statins lower LDL cholesterol?", "doc_id": "DEMO-001"}),
                json.dumps({"id": "empty", "question": "   "}),
                json.dumps({"id": "noq"}),
                "{not json",
                json.dumps({"id": "ghost", "question": "Is this in the corpus?", "doc_id": "NOPE-1"}),
                json.dumps({"id": "ok2", "question": "Which mosquito transmits malaria?"}),
            ]
        )
        + "\n"
    )
    counts = main(tiny_cfg(questions=str(questions)))
    assert counts["written"] == 2
    assert counts["problems"] == 4
    assert any("NOPE-1" in p for p in counts["problem_examples"])
    assert [r.id for r in read_records(tmp_path / "out")] == ["ok1", "ok2"]


def test_shards_split_questions_and_merge(tiny_cfg, tmp_path):
    for index in range(2):
        main(tiny_cfg(shard=f"{index}/2", limit=None, **{"sampling.max_tokens": 2}))
    out = tmp_path / "out"
    shard_ids = [[r["id"] for r in iter_jsonl(out / f"records.shard-{i}-of-2.jsonl")] for i in range(2)]
    assert not set(shard_ids[0]) & set(shard_ids[1])
    counts = merge_shards(out)
    assert counts["records"] == 60
    assert len({r.id for r in read_records(out)}) == 60


def test_merge_refuses_missing_shard(tiny_cfg, tmp_path):
    main(tiny_cfg(shard="0/3", limit=1))
    with pytest.raises(UserError, match=r"shards \[1, 2\] of 3 are missing"):
        merge_shards(tmp_path / "out")


@pytest.mark.parametrize(
    ("override", "message"),
    [("shard=3/2", "shard index"), ("shard=x", "i/N"), ("batch_size=0", "batch_size"), ("limit=0", "limit must be")],
)
def test_bad_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DataGenConfig, None, [override])


def test_ray_places_its_own_replicas():
    for setting in ("engine.devices=[0]", "engine.data_parallel_size=2"):
        with pytest.raises(ConfigError, match="Ray places the model replicas"):
            load_config(DataGenConfig, None, ["executor=ray", setting])


def test_data_parallel_limit_counts_the_whole_run():
    from data_gen.parallel import worker_limits

    assert worker_limits(5, 2) == [3, 2] and worker_limits(None, 3) == [None] * 3
    assert sum(worker_limits(256, 2)) == 256
    with pytest.raises(UserError, match="below engine.data_parallel_size"):
        worker_limits(1, 2)


def test_cli_missing_out_and_questions_exit_2(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "ragroute.cli", "data-gen", "--questions", "demo"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and "--out" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "ragroute.cli", "data-gen", "--questions", str(tmp_path / "none.jsonl"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2 and "none.jsonl" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_killed_vllm_run_resumes_without_losing_records(tmp_path, kill_midway_then_rerun):
    """A real data_gen run on the SmolLM2 teacher under vLLM is SIGKILLed mid-run; the rerun completes it."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ragroute.cli", "data-gen", "--config", "configs/data_gen/smollm2-135m_demo_teacher.yaml",
           "--out", str(out), "--limit", "12", "--batch-size", "2", "--sampling.max-tokens", "16",
           "--pipeline.index-dir", str(tmp_path / "idx"), "--engine.kv-cache-memory-gb", "0.5"]
    kill_midway_then_rerun(cmd, out, 4, 12)


def _answers(out) -> list[tuple]:
    """Everything a record says about its question, without the timings (which differ run to run)."""
    return [(r["id"], r["answer"], r["messages"], r["doc_ids"], r["prompt_tokens"], r["completion_tokens"],
             r["config_hash"]) for r in iter_jsonl(out / "records.jsonl")]


def test_prefetching_the_next_batch_keeps_records_identical(tiny_cfg, tmp_path):
    main(tiny_cfg(batch_size=2, prefetch="false", out=str(tmp_path / "plain")))
    main(tiny_cfg(batch_size=2, prefetch="true", out=str(tmp_path / "prefetched")))
    plain, prefetched = _answers(tmp_path / "plain"), _answers(tmp_path / "prefetched")
    assert len(plain) == 5 and prefetched == plain
    # and it resumes like any run: 2 more questions append to the 5 written
    again = main(tiny_cfg(batch_size=2, limit=7, out=str(tmp_path / "prefetched")))
    assert (again["already_done"], again["written"]) == (5, 2)
    assert _answers(tmp_path / "prefetched")[:5] == plain


def test_data_parallel_runs_one_worker_per_replica_and_merges(tiny_cfg, tmp_path):
    """engine.data_parallel_size 2: two worker processes (one per GPU on a GPU machine; here both on the CPU),
    shards merged into the layout of a hand-sharded run, with the same records as one process writes (batches of
    one question: batched dense encoding pads to the batch, so a near tie in retrieval may flip with the batch's
    other members)."""
    main(tiny_cfg(out=str(tmp_path / "one"), batch_size=1))
    counts = main(tiny_cfg(out=str(tmp_path / "dp"), batch_size=1, **{"engine.data_parallel_size": 2}))
    out = tmp_path / "dp"
    assert counts["records"] == 5
    assert sorted(p.name for p in out.glob("records*.jsonl")) == [
        "records.jsonl", "records.shard-0-of-2.jsonl", "records.shard-1-of-2.jsonl"]
    shard0 = [r["id"] for r in iter_jsonl(out / "records.shard-0-of-2.jsonl")]
    assert shard0 == ["Q-001", "Q-003", "Q-005"]  # limit 5 over two workers: exactly the first 5 questions
    one = {a[0]: a[:-1] for a in _answers(tmp_path / "one")}
    dp = {a[0]: a[:-1] for a in _answers(out)}
    assert dp == one
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shard"] == "merged 2 shards" and manifest["counts"]["records"] == 5
    with pytest.raises(ConfigError, match="not both"):
        tiny_cfg(shard="0/2", **{"engine.data_parallel_size": 2})


def test_verdict_first_records_carry_verdict_probabilities_and_citations(tiny_cfg, tmp_path):
    counts = main(tiny_cfg(**{"sampling.verdict.enabled": "true", "sampling.verdict.min_explanation_tokens": 2,
                              "sampling.max_tokens": 6}))
    records = read_records(tmp_path / "out")
    assert counts["written"] == 5 == len(records)
    for record in records:
        assert record.verdict in ("yes", "no", "maybe") and record.answer.startswith(record.verdict.capitalize() + ".")
        assert set(record.verdict_probs) == {"yes", "no", "maybe"}
        assert abs(sum(record.verdict_probs.values()) - 1) < 1e-6
        assert record.citation_source in ("model", "attributed") and parse_citations(record.cited_answer)
        assert record.timings["verdict"] + record.timings["explanation"] == pytest.approx(record.timings["generation"])
    # The verdict settings are part of the recorded system (and its hash).
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["system"]["sampling"]["verdict"]["enabled"] is True
    assert SystemSpec.from_dict(manifest["system"]).hash() == manifest["system_hash"]
    # Switching verdicts off is another config: the run refuses to mix the two kinds of answers.
    with pytest.raises(UserError, match="different config"):
        main(tiny_cfg(**{"sampling.max_tokens": 6}))


def test_runs_over_a_corpus_store_and_its_built_index(tiny_cfg, tmp_path):
    """corpus = a store directory, pipeline.index = its built index: records cite store documents, and the system
    spec carries the index identity (store fingerprint, engines)."""
    from index.config import IndexConfig
    from index.corpus_build import build_store
    from index.index_build import build_index
    from ragroute.rag.corpus import DEMO_CORPUS

    build_store([str(DEMO_CORPUS)], tmp_path / "store")
    built = build_index(tmp_path / "store", tmp_path / "index", IndexConfig(dense=False))
    counts = main(tiny_cfg(corpus=str(tmp_path / "store"), limit=3, **{
        "pipeline.index": str(tmp_path / "index"), "pipeline.retriever": "bm25", "pipeline.reranker": "none"}))
    records = read_records(tmp_path / "out")
    assert counts["written"] == 3 and all(r.doc_ids[0] == r.gold_doc_id for r in records)
    system = json.loads((tmp_path / "out" / "manifest.json").read_text())["system"]
    assert system["pipeline"]["index_identity"]["store_fingerprint"] == built["store_fingerprint"]
    assert system["pipeline"]["index_identity"]["sparse"]["engine"] == "tantivy"
