"""The cascade in `router eval`: scored out-of-fold from the student's verdict probabilities, with its waste."""

from __future__ import annotations

import json
import random

import pytest

from ragroute.errors import UserError
from ragroute.records import AnswerRecord, JsonlWriter


def write_verdict_pair(out_dir, items, seed=0):
    """The student is right when it is sure (margin high) and often wrong when unsure; the teacher is right 80%."""
    rng = random.Random(seed)
    flip = {"yes": "no", "no": "yes", "maybe": "yes"}
    paths = out_dir / "teacher.jsonl", out_dir / "student.jsonl"
    with JsonlWriter(paths[0], fsync=False) as tw, JsonlWriter(paths[1], fsync=False) as sw:
        for pmid, item in items:
            gold = item["final_decision"]
            unsure = rng.random() < 0.4
            student = flip[gold] if (unsure and rng.random() < 0.8) else gold
            top = rng.uniform(0.36, 0.5) if unsure else rng.uniform(0.75, 0.98)
            rest = (1 - top) / 2
            probs = {v: (top if v == student else rest) for v in ("yes", "no", "maybe")}
            teacher = gold if rng.random() < 0.8 else flip[gold]
            common = dict(id=str(pmid), question=item["QUESTION"], gold_decision=gold, doc_scores=[3.0, 2.0])
            tw.write(AnswerRecord(answer=f"{teacher.capitalize()}. Because [0].", model="t", verdict=teacher,
                                  timings={"generation": 3.0, "verdict": 0.3}, **common))
            sw.write(AnswerRecord(answer=f"{student.capitalize()}. Because [0].", model="s", verdict=student,
                                  verdict_probs=probs, timings={"generation": 1.0, "verdict": 0.08}, **common))
    return paths


def test_cascade_beats_question_only_routers_when_the_student_knows_its_doubt(tmp_path, pqal_items):
    from router.cli import cli

    teacher, student = write_verdict_pair(tmp_path, pqal_items[:240])
    out = tmp_path / "eval"
    assert cli(["eval", "--teacher", str(teacher), "--student", str(student), "--config",
                "configs/router/cascade.yaml", "--out", str(out), "--cv-folds", "3", "--compare-models", "[]"]) == 0
    report = json.loads((out / "router_eval.json").read_text())
    routers = report["routers"]
    assert {"cascade", "logreg", "random", "heuristic", "oracle"} <= set(routers)
    assert routers["cascade"]["apgr"] > routers["logreg"]["apgr"] + 0.1
    waste = routers["cascade"]["escalation_waste"]
    assert waste["mean_s"] == pytest.approx(0.08) and waste["share_of_student_answer"] == pytest.approx(0.08)
    # The latency curve charges the waste: at share 1 every question costs the teacher plus the verdict step.
    assert routers["cascade"]["curve"]["mean_generation_s"][-1] == pytest.approx(3.08)
    assert routers["logreg"]["curve"]["mean_generation_s"][-1] == pytest.approx(3.0)


def test_cascade_needs_verdict_first_student_records(tmp_path, record_pair):
    from router.cli import cli

    teacher, student, _ = record_pair
    with pytest.raises(UserError, match="verdict_probs"):
        cli(["eval", "--teacher", str(teacher), "--student", str(student), "--config", "configs/router/cascade.yaml",
             "--out", str(tmp_path / "x"), "--compare-models", "[]"])


def test_fit_cascade_writes_a_rule_that_eval_uses(tmp_path, pqal_items):
    from evaluation.config import EvalConfig
    from evaluation.main import main as eval_main
    from ragroute.cascade import load_cascade
    from router.cli import cli

    teacher, student = write_verdict_pair(tmp_path, pqal_items[:150])
    rule_path = tmp_path / "cascade.json"
    assert cli(["fit-cascade", "--teacher", str(teacher), "--student", str(student), "--config",
                "configs/router/cascade.yaml", "--out", str(rule_path), "--cv-folds", "3"]) == 0
    rule = load_cascade(rule_path)
    assert 0.3 < rule.metadata["validation_teacher_share"] < 0.7  # threshold_target 0.5 on out-of-fold scores
    # Answers from the records (no model runs: no single-stream latency pass either).
    result = eval_main(EvalConfig(dataset="unused", out=str(tmp_path / "eval"), router=None, cascade=str(rule_path),
                                  student="smollm2-135m-pruned", latency_sample=0,
                                  teacher_records=str(teacher), student_records=str(student), bootstrap=0))
    cascade = result["systems"]["cascade"]
    assert result["cascade"]["escalated"] == round(cascade["teacher_share"] * 150)
    # Escalated questions pay the student's verdict step on top of the teacher.
    assert result["cascade"]["escalation_waste_mean_s"] == pytest.approx(0.08)
    assert cascade["accuracy"] > result["systems"]["student"]["accuracy"]
