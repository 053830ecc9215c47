"""`ragroute loop` at tiny scale: two random-init Llamas, the demo questions, one improvement round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.loop import LoopConfig, kept, run_loop, split_questions


def test_the_gate_keeps_only_rounds_that_drop_nothing():
    before = {"apgr": 0.6, "student_quality": 0.5}
    assert kept(before, {"apgr": 0.6, "student_quality": 0.5}, 0.0)
    assert not kept(before, {"apgr": 0.59, "student_quality": 0.7}, 0.0)
    assert not kept(before, {"apgr": 0.9, "student_quality": 0.49}, 0.0)
    assert kept(before, {"apgr": 0.59, "student_quality": 0.5}, 0.02)
    assert kept({"apgr": None, "student_quality": 0.5}, {"apgr": 0.1, "student_quality": 0.5}, 0.0)


def test_the_split_is_seeded_and_disjoint():
    items = list(range(100))
    cfg = LoopConfig(holdout=20, seed_questions=30, pool_per_round=10)
    held, seed, pool = split_questions(items, cfg)
    assert (len(held), len(seed), len(pool)) == (20, 30, 50) and not set(held) & set(seed)
    assert split_questions(items, cfg) == (held, seed, pool)


@pytest.mark.slow
def test_one_round_on_tiny_models(tmp_path: Path, tiny_model_dir: Path, make_tiny_model):
    student_dir = make_tiny_model(tmp_path / "student-model", seed=1)
    specs = {}
    for name, path in (("teacher", tiny_model_dir), ("student", student_dir)):
        specs[name] = tmp_path / f"{name}.yaml"
        specs[name].write_text(f"name: tiny-{name}\npath: {path}\ndtype: float32\nmax_model_len: 2048\n")
    # Offsets make the tiny teacher say "yes" and the tiny student "no": the hard questions are the gold "yes" ones.
    configs = {}
    for name, favoured in (("teacher", "yes"), ("student", "no")):
        bias = {"yes": 0.0, "no": 0.0, "maybe": 0.0, favoured: 9.0}
        configs[name] = tmp_path / f"{name}_data_gen.yaml"
        configs[name].write_text(json.dumps({
            "engine": {"name": "transformers"},
            "sampling": {"max_tokens": 6, "verdict": {"enabled": True, "min_explanation_tokens": 2, "bias": bias}},
            "pipeline": {"final_n": 2, "max_chars": 200, "index_dir": str(tmp_path / "idx")},
        }))  # JSON is YAML, and its quoted keys keep "yes"/"no" strings
    cfg = LoopConfig(
        questions="demo", corpus="demo", out=str(tmp_path / "loop"), rounds=1, holdout=15, seed_questions=30,
        pool_per_round=15, train_steps=1, teacher=str(specs["teacher"]), student_init=str(specs["student"]),
        teacher_data_gen=str(configs["teacher"]), student_data_gen=str(configs["student"]),
        train_overrides=["eval_fraction=0.0", "per_device_batch_size=4", "max_length=512", "dtype=float32",
                         "save_steps=100", "learning_rate=1.0e-3", "keep_unfinished=true"],  # 6-token answers: all cut
        router_overrides=["cv_folds=2", "param_grid={C: [1.0]}", "features.char_ngrams=[]", "features.min_df=1"],
    )
    report = run_loop(cfg)
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[0]["train_questions"] == 30 and 1 <= rounds[1]["new_questions"] <= 15
    assert rounds[1]["kept"] == kept(rounds[0], rounds[1], 0.0)
    final = Path(report["final_student"])
    assert (final == Path(cfg.out) / "train" / "round1" / "student.yaml") == rounds[1]["kept"]
    teacher_new = [json.loads(line) for line in (Path(cfg.out) / "answers" / "teacher_round1" / "records.jsonl")
                   .read_text().splitlines()]
    assert len(teacher_new) == rounds[1]["new_questions"] and all(r["verdict_probs"] for r in teacher_new)
    table = (Path(cfg.out) / "loop_report.md").read_text()
    assert table.count("\n") == 4 and "held-out APGR" in table


def test_cli_without_questions_is_a_clear_error(tmp_path: Path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "ragroute.cli", "loop", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--questions" in run.stderr and "Traceback" not in run.stderr
