"""The demo end to end (the real SmolLM2 teacher, a tiny random student, transformers engine), and
`ragroute eval` on its artifacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evaluation.demo import DemoConfig, run_demo

METRIC_KEYS = {"accuracy", "macro_f1", "rouge_l", "citation_valid", "own_abstract_cited", "gen_latency_p50_s",
               "gen_latency_p95_s", "total_latency_p50_s", "teacher_share"}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, make_tiny_model, teacher_dir):
    root = tmp_path_factory.mktemp("demo")
    student_dir = make_tiny_model(root / "student", num_layers=1, seed=1)
    student_spec = root / "student.yaml"
    student_spec.write_text(f"name: tiny-student\npath: {student_dir}\ndtype: float32\nmax_model_len: 2048\n")
    router_cfg = root / "router.yaml"
    # The real teacher gets some verdicts right and the random student none: labels against the gold verdicts mix.
    router_cfg.write_text(
        "labels:\n  metric: decision\n  reference: gold\n  tolerance: 1.0\nfeatures:\n  min_df: 1\n"
        "model: logreg\ncv_folds: 2\nthreshold_rule: teacher_share\nthreshold_target: 0.5\n"
    )
    cascade_cfg = root / "cascade.yaml"  # the same labels, few folds: 14 training questions
    cascade_cfg.write_text(router_cfg.read_text() + "cascade:\n  enabled: true\n")
    env_home = os.environ.get("RAGROUTE_HOME")
    os.environ["RAGROUTE_HOME"] = str(root / "home")
    cfg = DemoConfig(out=str(root / "out"), teacher="smollm2-135m", student_init=str(student_spec),
                     engine="transformers", limit=24, train_steps=2, max_tokens=12, router_config=str(router_cfg),
                     cascade_config=str(cascade_cfg), latency_sample=4)
    try:
        result = run_demo(cfg)
        yield root, cfg, result
    finally:
        if env_home is None:
            os.environ.pop("RAGROUTE_HOME", None)
        else:
            os.environ["RAGROUTE_HOME"] = env_home


@pytest.mark.slow
def test_demo_produces_every_artifact(demo_run):
    root, cfg, result = demo_run
    out = root / "out"
    for path in ("teacher/records.jsonl", "student/records.jsonl", "student.yaml", "router.skops", "cascade.json",
                 "split.json", "train/train_report.json", "eval/metrics.json", "eval/report.md",
                 "eval/latency_breakdown.png", "eval/quality_vs_teacher_share.png", "demo.log"):
        assert (out / path).exists(), path
    # Held out: 10 of the 24 questions; the student trained, and both routers were fitted, on the other 14 only.
    split = json.loads((out / "split.json").read_text())
    assert (len(split["train"]), len(split["heldout"])) == (14, 10) and not set(split["train"]) & set(split["heldout"])
    trained_on = {json.loads(line)["id"] for line in (out / "train-split" / "teacher" / "records.jsonl").open()}
    assert trained_on == set(split["train"])
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 10 and {d["id"] for d in metrics["decisions"]} == set(split["heldout"])
    assert result["split"] == {"train": 14, "heldout": 10, "seed": 0}
    assert {"teacher", "student", "routed", "cascade"} <= set(metrics["systems"])
    for system in ("teacher", "student", "routed", "cascade"):
        assert METRIC_KEYS <= set(metrics["systems"][system])
        # Verdict-first: every answer opens with a verdict; the returned cited answers carry citations.
        assert metrics["systems"][system]["verdict_present"] == 1.0
        assert metrics["systems"][system]["cited_answer_valid"] > 0
    assert metrics["systems"]["teacher"]["teacher_share"] == 1.0
    assert metrics["systems"]["student"]["teacher_share"] == 0.0
    assert 0.0 <= metrics["systems"]["routed"]["teacher_share"] <= 1.0
    assert "router" in metrics["systems"]["routed"]["stages"]
    # Latencies come from 4 of the 10 held-out questions answered one at a time; throughput from the batches.
    assert metrics["latency_sample"] == 4
    assert metrics["systems"]["cascade"]["latency_n"] == 4
    for system in ("teacher", "student", "routed"):
        m = metrics["systems"][system]
        assert m["latency_n"] == 4 and m["gen_latency_p50_s"] > 0 and m["batch_q_per_min"] > 0
    assert metrics["routed_vs_teacher_latency_ratio"] == pytest.approx(
        metrics["systems"]["routed"]["total_latency_p50_s"] / metrics["systems"]["teacher"]["total_latency_p50_s"])
    assert {"teacher.json", "student.json"} <= {p.name for p in (out / "eval" / "latency").iterdir()}
    report_md = (out / "eval" / "report.md").read_text()
    assert "Single-stream: 4 sampled questions" in report_md and "batched q/min" in report_md
    report = json.loads((out / "train" / "train_report.json").read_text())
    assert report["steps"] == 2
    student_records = (out / "student" / "records.jsonl").read_text()
    assert '"model": "smollm2-135m-distilled"' in student_records


@pytest.mark.slow
def test_demo_rerun_skips_finished_steps(demo_run, capsys):
    root, cfg, first = demo_run
    kept = [*(root / "out").rglob("*.jsonl"), *(root / "out" / "eval" / "latency").glob("*.json")]
    before = {p: p.stat().st_mtime for p in kept}
    second = run_demo(cfg)
    after = {p: p.stat().st_mtime for p in kept}
    assert before == after  # no answers regenerated, no latency remeasured
    assert second["systems"]["teacher"]["accuracy"] == first["systems"]["teacher"]["accuracy"]
    shown = capsys.readouterr().out
    assert "done, skipped" in shown and "10 held-out questions" in shown
    # Quiet: third-party output went to the log; the table fits 80 columns even where the terminal is wider.
    assert "WARNING" not in shown and "Loading weights" not in shown
    import io

    from rich.console import Console

    from evaluation.demo import summary_table

    wide = io.StringIO()
    Console(file=wide, width=200).print(summary_table(second))
    assert "cascade" in wide.getvalue() and max(len(line) for line in wide.getvalue().splitlines()) <= 80


@pytest.mark.slow
def test_eval_cli_on_demo_artifacts_and_bad_input(demo_run, tmp_path):
    root, cfg, _ = demo_run
    env = {**os.environ, "RAGROUTE_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1"}
    out = root / "out"
    cmd = [sys.executable, "-m", "ragroute.cli", "eval", "--dataset", "demo", "--limit", "10", "--out", str(tmp_path / "e"),
           "--teacher", cfg.teacher, "--student", str(out / "student.yaml"), "--router", str(out / "router.skops"),
           "--teacher-records", str(out / "teacher"), "--student-records", str(out / "student"), "--engine.name", "transformers", "--latency-sample", "3",
           "--bootstrap", "50"]  # sampling: the router file's (the demo's 12 tokens), not set again
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["n"] == 10 and "routed" in metrics["systems"]
    assert metrics["latency_sample"] == 3 and metrics["systems"]["routed"]["latency_n"] == 3
    bad = subprocess.run(cmd[:-2] + ["--bootstrap", "-1"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "bootstrap" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "ragroute.cli", "eval", "--dataset", "demo", "--out", str(tmp_path / "m")],
                             capture_output=True, text=True, env={**env, "RAGROUTE_HOME": str(tmp_path / "empty")}, timeout=600)
    assert missing.returncode == 2 and "ragroute demo" in missing.stderr


@pytest.mark.slow
def test_eval_on_a_pubmedqa_file_with_the_demo_artifacts(demo_run, tmp_path, pqal_dev_path):
    """A dataset that brings its own abstracts is retrieved over them, everything else from the router file; a
    run in which no question can be answered ends with a clear message (exit 2)."""
    root, cfg, _ = demo_run
    out = root / "out"
    dataset = tmp_path / "pqal_small.json"
    dataset.write_text(json.dumps(dict(list(json.loads(pqal_dev_path.read_text()).items())[:5])))
    env = {**os.environ, "RAGROUTE_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1"}
    def run_eval(out_dir, *extra):
        return subprocess.run(
            [sys.executable, "-m", "ragroute.cli", "eval", "--dataset", str(dataset), "--out", str(out_dir),
             "--teacher", cfg.teacher, "--student", str(out / "student.yaml"), "--router", str(out / "router.skops"),
             "--engine.name", "transformers", "--latency-sample", "2", "--bootstrap", "20", *extra],
            capture_output=True, text=True, env=env, timeout=900)

    done = run_eval(tmp_path / "e")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["n"] == 5 and "routed" in metrics["systems"]
    assert str(dataset) in metrics["corpus"] and "own documents" in metrics["corpus"]
    assert "Retrieved over the dataset's own documents" in (tmp_path / "e" / "report.md").read_text()
    # The router file's system (pipeline settings, verdict-first sampling) answered them.
    assert metrics["systems"]["teacher"]["verdict_present"] == 1.0
    pmids = set(json.loads(dataset.read_text()))
    records = [json.loads(line) for line in (tmp_path / "e" / "answers" / "teacher" / "records.jsonl").open()]
    assert {doc for r in records for doc in r["doc_ids"]} <= pmids
    # Over the demo corpus none of its questions' abstracts exists: exit 2, the reason named, no traceback.
    failed = run_eval(tmp_path / "w", "--corpus", "demo")
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "could be answered" in failed.stderr and "unknown doc id" in failed.stderr
    assert "Traceback" not in failed.stderr
