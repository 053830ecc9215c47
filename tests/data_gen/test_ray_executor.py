"""``--executor ray`` on a real local Ray cluster (one per module): same records as the local executor, bad input
counted the same way, a killed driver loses no record and its rerun finishes the job, a killed engine actor is
restarted by Ray and its batch redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from data_gen.config import DataGenConfig
from data_gen.main import main
from ragroute.config import load_config
from ragroute.records import read_records

REPO = Path(__file__).resolve().parents[2]
COMPARED = ("question", "answer", "doc_ids", "doc_scores", "prompt", "messages", "prompt_tokens", "completion_tokens",
            "finish_reason", "config_hash", "gold_doc_id", "answer_token_ids", "top_logprobs")


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' runs these tests")
    ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def make_cfg(tiny_model_dir, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(f"name: tiny\npath: {tiny_model_dir}\ndtype: float32\nmax_model_len: 2048\n")

    def make(out: str, **overrides) -> DataGenConfig:
        base = [
            f"model_config={spec}", "questions=demo", "corpus=demo", f"out={tmp_path / out}",
            "engine.name=transformers", "sampling.max_tokens=6", "batch_size=3", "limit=8", "top_logprobs=3",
            "pipeline.final_n=2", "pipeline.max_chars=200", f"pipeline.index_dir={tmp_path / 'idx'}",
        ]
        return load_config(DataGenConfig, None, base + [f"{k}={v}" for k, v in overrides.items()])

    return make


def by_id(path: Path) -> dict[str, dict]:
    return {r.id: {k: getattr(r, k) for k in COMPARED} for r in read_records(path)}


def test_same_records_and_manifest_as_local(ray_address, make_cfg, tmp_path):
    local = main(make_cfg("local"))
    distributed = main(make_cfg("ray", executor="ray", ray_actors=2, ray_prepare_cpus=0))
    assert local["written"] == distributed["written"] == 8
    expected, got = by_id(tmp_path / "local"), by_id(tmp_path / "ray")
    assert sorted(got) == sorted(expected) == [f"Q-{i:03d}" for i in range(1, 9)]
    logprobs = {i: (got[i].pop("top_logprobs"), expected[i].pop("top_logprobs")) for i in got}
    assert got == expected  # greedy: the same answers, tokens, prompts and documents
    for mine, theirs in logprobs.values():  # the same top-k tokens; float32 sums may round differently
        assert [[tok for tok, _ in step] for step in mine] == [[tok for tok, _ in step] for step in theirs]
        assert np.allclose([[lp for _, lp in step] for step in mine], [[lp for _, lp in step] for step in theirs],
                           rtol=0, atol=1e-4)
    for record in read_records(tmp_path / "ray"):  # each question's share of its batch, as locally
        assert record.timings["generation_share"] > 0
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("local", "ray")]
    assert manifests[0]["config_hash"] == manifests[1]["config_hash"]
    assert manifests[1]["config"]["executor"] == "ray"


def test_bad_input_counted_like_local(ray_address, make_cfg, tmp_path):
    questions = tmp_path / "q.jsonl"
    lines = [json.dumps({"id": "ok1", "question": "Do statins lower LDL cholesterol?", "doc_id": "DEMO-001"}),
             json.dumps({"id": "empty", "question": "  "}), json.dumps({"id": "noq"}), "{not json",
             json.dumps({"id": "ghost", "question": "Is this in the corpus?", "doc_id": "NOPE-1"}),
             json.dumps({"id": "ok2", "question": "Which mosquito transmits malaria?"})]
    questions.write_text("\n".join(lines) + "\n")
    local = main(make_cfg("local", questions=str(questions)))
    distributed = main(make_cfg("ray", questions=str(questions), executor="ray"))
    for key in ("questions", "written", "problems", "problem_examples"):
        assert distributed[key] == local[key], key
    assert distributed["problems"] == 4 and sorted(r.id for r in read_records(tmp_path / "ray")) == ["ok1", "ok2"]


def test_questions_are_split_into_the_local_batches(ray_address):
    """One block per batch, in order, with the local executor's batch sizes: no batch straddles two blocks and
    no block holds many batches (a map task returns nothing before its whole block is answered)."""
    from data_gen.ray_executor import question_blocks
    from ragroute.rag.corpus import QAItem

    items = [QAItem(id=f"q{i}", question=f"question {i}?") for i in range(10)]
    blocks = [[json.loads(text)["id"] for text in block["item"]]
              for block in question_blocks(items, 4).iter_batches(batch_size=None, batch_format="numpy")]
    assert blocks == [["q0", "q1", "q2", "q3"], ["q4", "q5", "q6", "q7"], ["q8", "q9"]]


def test_each_block_reaches_the_driver_before_the_next_is_done(ray_address, tmp_path):
    """The second batch only finishes once the driver has received the first (a marker file the consumer
    writes): an iterator that holds a finished block back until the next one is done (``iter_rows``) would
    leave the second batch waiting for its whole timeout."""
    import ray.data

    from data_gen.ray_executor import streamed_blocks

    marker = tmp_path / "first-row-received"

    def answer(batch: dict) -> dict:
        if batch["n"][0] == 1:
            deadline = time.monotonic() + 60
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return {"n": batch["n"], "first_seen_before": [marker.exists()] * len(batch["n"])}

    ds = ray.data.from_items([{"n": 0}, {"n": 1}], override_num_blocks=2).map_batches(answer, batch_size=1)
    rows = []
    for block in streamed_blocks(ds):
        rows.extend(block)
        marker.touch()
    assert sorted((r["n"], r["first_seen_before"]) for r in rows) == [(0, False), (1, True)]


def test_ray_llm_generation_builds_the_vllm_processor(ray_address, make_cfg, tiny_model_dir):
    """The ray.data.llm path against the installed Ray's API: the processor's stages are chained after the
    retrieval stage, after ragroute's own chat template. (Running it needs GPU workers, which CI does not have.)"""
    import ray.data

    from data_gen.ray_executor import ray_llm_generation
    from ragroute.models import load_model_spec

    cfg = make_cfg("llm", executor="ray", ray_generation="ray-llm", **{"engine.name": "vllm"})
    ds = ray_llm_generation(ray.data.from_items([{"item": "{}", "prepared": "{}"}]), cfg,
                            load_model_spec(cfg.model_config), cfg.sampling)
    plan, ops = [], [ds._logical_plan.dag]
    while ops:
        plan.append(ops[0].name)
        ops = list(ops[0].input_dependencies)
    plan = " <- ".join(plan)
    for stage in ("_preprocess", "vLLMEngineStageUDF", "DetokenizeUDF", "_postprocess"):
        assert stage in plan, plan
    # ragroute templates and tokenizes (as the local engine does): Ray's own stages would load the tokenizer from
    # the weights' folder, which a shape-only model or a separately named tokenizer does not have.
    for stage in ("ChatTemplateUDF", "TokenizeUDF"):
        assert stage not in plan, plan


def engine_actor_pids() -> list[int]:
    """The pids of this test's EngineStage actors: descendants of this process (its own Ray cluster) only."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "EngineStage" in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.slow
def test_killed_engine_actor_is_restarted_and_its_batch_redone(ray_address, make_cfg, teacher_dir, tmp_path,
                                                               wait_for_records):
    """SmolLM2 (transformers) answers 10 questions two at a time; once records exist the engine actor is
    SIGKILLed. Ray restarts it and resubmits the lost batch: every question ends with exactly one record."""
    cfg = make_cfg("ray", executor="ray", model_config="smollm2-135m", limit=10, batch_size=2, top_logprobs=None,
                   **{"sampling.max_tokens": 16, "sampling.min_tokens": 16})
    outcome: dict = {}
    run = threading.Thread(target=lambda: outcome.update(main(cfg)))
    run.start()
    wait_for_records(tmp_path / "ray" / "records.jsonl", 2, run.is_alive)
    pids = engine_actor_pids()
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    run.join(timeout=600)
    assert not run.is_alive() and outcome["written"] == 10 and outcome["problems"] == 0
    ids = [r.id for r in read_records(tmp_path / "ray")]
    assert len(ids) == len(set(ids)) == 10


@pytest.mark.slow
def test_killed_driver_loses_no_record_and_rerun_finishes(ray_address, teacher_dir, tmp_path, kill_midway_then_rerun):
    """A real `ragroute data-gen --executor ray --ray-address` driver joined to the module's cluster is SIGKILLed
    mid-run; the records it wrote stay intact and the same command completes the set."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ragroute.cli", "data-gen", "--config", "configs/data_gen/smollm2-135m_demo_teacher.yaml",
           "--out", str(out), "--limit", "12", "--batch-size", "2", "--sampling.max-tokens", "24",
           "--sampling.min-tokens", "24", "--engine.name", "transformers", "--pipeline.index-dir", str(tmp_path / "idx"),
           "--executor", "ray", "--ray-address", ray_address]
    kill_midway_then_rerun(cmd, out, 2, 12)


def test_executor_ray_without_ray_is_a_clear_error(tmp_path):
    """With Ray not importable (as after a default setup), `--executor ray` exits 2 and says how to install it."""
    code = ("import sys; sys.modules['ray'] = None; from ragroute.cli import main; "
            f"sys.exit(main(['data-gen', '--questions', 'demo', '--out', {str(tmp_path / 'o')!r}, '--executor', 'ray']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2 and "pip install -e '.[ray]'" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o").exists()
