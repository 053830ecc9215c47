"""The artifact layer on real files: what the previous release (0.1.0) wrote still loads, writes are atomic,
one hash and one provenance block."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from ragroute.artifacts import (
    Checkpoint,
    RecordsRun,
    RouterFile,
    content_hash,
    provenance,
    write_atomic,
    write_directory_atomic,
    write_json_atomic,
)
from ragroute.errors import ConfigError, UserError

# Written by the 0.1.0 writers (data_gen, router fit, CascadeRule.save, the train marker) before this layer existed.
RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"


def test_a_records_run_of_the_previous_release_loads_and_resumes(tmp_path: Path) -> None:
    from data_gen.config import DataGenConfig
    from data_gen.manifest import identity_hash, output_identity
    from ragroute.config import load_config
    from ragroute.models import ModelSpec
    from ragroute.system import SystemSpec, manifest_system

    run = RecordsRun.load(RELEASE / "records_run", require_manifest=True)
    records = run.records()
    assert [r.id for r in records] == ["Q-001", "Q-002"]
    assert {r.config_hash for r in records} == {run.config_hash}
    assert run.system["pipeline"]["final_n"] == 2 and manifest_system(RELEASE / "records_run") == run.system
    assert run.manifest["system_hash"] == SystemSpec.from_dict(run.system).hash()  # the same canonical hash
    # The old run's whole config (flat engine keys, top_logprobs) loads, and its identity hashes as it did then,
    # so data_gen resumes the run instead of refusing it.
    old_yaml = tmp_path / "old.yaml"
    old_yaml.write_text(yaml.safe_dump(run.manifest["config"]))
    cfg = load_config(DataGenConfig, old_yaml)
    spec = ModelSpec(**run.manifest["identity"]["model"])
    assert identity_hash(output_identity(cfg, spec)) == run.config_hash


def test_a_newer_manifest_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    shutil.copytree(RELEASE / "records_run", tmp_path / "run")
    manifest = tmp_path / "run" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "schema_version": 99}))
    with pytest.raises(UserError, match="schema 99, newer than this ragroute reads.*upgrade ragroute"):
        RecordsRun.load(tmp_path / "run")
    with pytest.raises(UserError, match="not a data_gen output"):
        RecordsRun.load(tmp_path / "missing.jsonl", require_manifest=True)


def test_router_cascade_and_checkpoint_of_the_previous_release_load() -> None:
    from ragroute.cascade import CascadeRule, load_cascade
    from ragroute.system import checkpoint_data_system
    from router.persist import load_router

    file = RouterFile.load(RELEASE / "router.skops")
    bundle = load_router(RELEASE / "router.skops")
    assert file.threshold == bundle.threshold and 0 < bundle.threshold < 1
    scores = bundle.score(["Is aspirin useful after a stroke?", "What is malaria?"])
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 1)).all()
    assert bundle.metadata["systems"]["teacher"] is None  # the synthetic pair had no manifests
    rule = load_cascade(RELEASE / "cascade.json")
    assert rule == CascadeRule.load(RELEASE / "cascade.json")
    assert rule.decide({"yes": 0.98, "no": 0.01, "maybe": 0.01}).source == "cascade"
    checkpoint = Checkpoint.load(RELEASE / "checkpoint")
    assert checkpoint.info["kind"] == "distilled"
    assert checkpoint.data_system == checkpoint_data_system(str(RELEASE / "checkpoint"))
    assert checkpoint.data_system == RecordsRun.load(RELEASE / "records_run").system


def test_new_artifacts_round_trip_with_provenance(tmp_path: Path) -> None:
    from ragroute.cascade import CascadeRule, load_cascade
    from router.persist import load_router, save_router

    old = load_router(RELEASE / "router.skops")
    old.metadata["versions"] = provenance()["versions"]
    path = save_router(old, tmp_path / "r" / "router.skops")
    assert load_router(path).threshold == old.threshold
    assert not [p for p in path.parent.iterdir() if p.name != "router.skops"]  # no temporary file left
    rule = CascadeRule(weights={"margin": 1.0}, intercept=0.0, threshold=0.4, metadata=provenance({"x": 1}))
    assert load_cascade(rule.save(tmp_path / "rule.json")) == rule
    block = rule.metadata
    assert {"python", "numpy", "scikit-learn"} <= set(block["versions"]) and block["config"] == {"x": 1}
    saved = Checkpoint.save(tmp_path / "model", lambda d: (d / "weights.bin").write_bytes(b"w") and {"kind": "t"})
    assert saved is not None and Checkpoint.load(tmp_path / "model").info["kind"] == "t"
    assert Checkpoint.save(tmp_path / "model", lambda d: {"kind": "again"}) is None  # already prepared


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = write_json_atomic(tmp_path / "manifest.json", {"counts": {"written": 3}})

    def dies_midway(tmp: Path) -> None:
        tmp.write_text('{"counts": {"wri')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, dies_midway)
    assert json.loads(target.read_text()) == {"counts": {"written": 3}}
    assert os.listdir(tmp_path) == ["manifest.json"]
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "old").write_text("kept")

    def half_built(tmp: Path) -> None:
        (tmp / "part").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_directory_atomic(tmp_path / "index", half_built)
    assert sorted(os.listdir(tmp_path)) == ["index", "manifest.json"]
    assert os.listdir(tmp_path / "index") == ["old"]


def test_content_hash_is_the_canonical_json_hash() -> None:
    import hashlib

    content = {"b": [1, 2.5, None], "a": {"z": "é", "y": True}}
    assert content_hash(content) == hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
    assert content_hash({"a": {"y": True, "z": "é"}, "b": [1, 2.5, None]}, length=16).startswith(content_hash(content))


def test_a_renamed_key_still_works_and_both_names_are_an_error(tmp_path: Path, caplog) -> None:
    from data_gen.config import DataGenConfig
    from ragroute.config import load_config

    old = tmp_path / "old.yaml"
    old.write_text("top_logprobs: 5\nsampling:\n  max_tokens: 7\n")
    with caplog.at_level("WARNING", logger="ragroute.config"):
        cfg = load_config(DataGenConfig, old)
    assert cfg.sampling.logprobs == 5 and cfg.sampling.max_tokens == 7
    assert "'top_logprobs' is now 'sampling.logprobs'" in caplog.text
    assert load_config(DataGenConfig, None, ["top_logprobs=3"]).sampling.logprobs == 3
    both = tmp_path / "both.yaml"
    both.write_text("top_logprobs: 5\nsampling:\n  logprobs: 4\n")
    with pytest.raises(ConfigError, match="give only 'sampling.logprobs'"):
        load_config(DataGenConfig, both)


def test_flat_engine_keys_of_earlier_releases_load_into_their_sections(tmp_path: Path, caplog) -> None:
    from ragroute.config import add_config_arguments, config_from_args, load_config
    from serve.config import ServeConfig

    old = tmp_path / "serve.yaml"
    old.write_text("student:\n  engine: {name: vllm, gpu_memory_utilization: 0.3, devices: [1]}\n"
                   "teacher:\n  engine: {name: openai, base_url: 'http://up:8000/v1', max_retries: 1, device: cpu}\n")
    with caplog.at_level("WARNING", logger="ragroute.config"):
        cfg = load_config(ServeConfig, old)
    assert (cfg.student.engine.vllm.gpu_memory_utilization, cfg.student.engine.vllm.devices) == (0.3, [1])
    teacher = cfg.teacher.engine
    assert (teacher.openai.base_url, teacher.openai.max_retries, teacher.transformers.device) == (
        "http://up:8000/v1", 1, "cpu")
    assert "'student.engine.gpu_memory_utilization' is now 'student.engine.vllm.gpu_memory_utilization'" in caplog.text
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ServeConfig)
    args = parser.parse_args(["--student.engine.name", "vllm", "--student.engine.gpu-memory-utilization", "0.2"])
    assert config_from_args(ServeConfig, args).student.engine.vllm.gpu_memory_utilization == 0.2
    assert "--student.engine.gpu-memory-utilization" not in parser.format_help()  # hidden; the new flag is shown
    assert "--student.engine.vllm.gpu-memory-utilization" in parser.format_help()
