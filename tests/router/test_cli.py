"""`ragroute router fit|eval|predict|hard-set` end to end through the real console entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragroute.cli import main as ragroute_main
from ragroute.config import CONFIG_ROOT, load_config
from ragroute.rag.corpus import load_questions
from router.config import RouterConfig

FAST = ["--cv-folds", "3", "--param-grid", "{C: [0.3, 3.0]}"]


@pytest.fixture(scope="module")
def fitted(record_pair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    teacher, student, _ = record_pair
    out = tmp_path_factory.mktemp("fit") / "router.skops"
    code = ragroute_main(["router", "fit", "--teacher", str(teacher), "--student", str(student),
                          "--config", "configs/router/logreg_tfidf.yaml", *FAST, "--out", str(out)])
    assert code == 0 and out.is_file()
    return out


def test_eval_beats_the_baselines_out_of_fold(record_pair, tmp_path: Path) -> None:
    teacher, student, _ = record_pair
    code = ragroute_main(["router", "eval", "--teacher", str(teacher), "--student", str(student),
                          *FAST, "--compare-models", "[knn]", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "router_eval.json").read_text())
    assert (tmp_path / "router_curve.png").stat().st_size > 10_000
    assert report["n"] == 300
    routers = report["routers"]
    assert {"logreg", "knn", "random", "heuristic", "oracle"} <= set(routers)
    assert routers["logreg"]["scored"].startswith("out-of-fold")
    assert routers["random"]["apgr"] == pytest.approx(0.5)
    # The synthetic hardness follows question length and retrieval strength, learnable from the features.
    for name in ("logreg", "knn"):
        assert routers[name]["apgr"] > routers["heuristic"]["apgr"] + 0.05
        assert routers[name]["apgr"] > routers["random"]["apgr"] + 0.05
        assert routers[name]["apgr"] <= routers["oracle"]["apgr"] + 1e-9
        assert 0 <= routers[name]["cpt50"] <= routers[name]["cpt80"] <= 1
    at = routers["logreg"]["at_threshold"]
    assert at["teacher_share"] == pytest.approx(0.5, abs=0.05)  # logreg_tfidf default target, on out-of-fold scores
    fixed = report["fixed"]
    assert fixed["always_student"]["mean_generation_s"] < at["mean_generation_s"] < fixed["always_teacher"]["mean_generation_s"]
    assert len(routers["logreg"]["curve"]["teacher_share"]) == len(routers["logreg"]["curve"]["pgr"])


def test_eval_without_a_quality_gap_says_so(record_pair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Roles swapped: the "teacher" is the weaker model, so there is no gap for routing to recover.
    teacher, student, _ = record_pair
    code = ragroute_main(["router", "eval", "--teacher", str(student), "--student", str(teacher),
                          *FAST, "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "router_eval.json").read_text())
    assert report["quality_gap"] <= 0 and report["routers"]["logreg"]["apgr"] is None
    out = capsys.readouterr().out
    assert "note: the teacher is not better than the student" in out
    assert "APGR undefined" in out and "quality always-student" in out


def test_eval_of_a_router_file(fitted: Path, record_pair, tmp_path: Path, pqal_items, pair_writer) -> None:
    # On its own training records the file's model is re-fitted out-of-fold (same data hash) ...
    teacher, student, _ = record_pair
    assert ragroute_main(["router", "eval", "--router", str(fitted), "--teacher", str(teacher),
                          "--student", str(student), "--out", str(tmp_path / "same")]) == 0
    same = json.loads((tmp_path / "same" / "router_eval.json").read_text())
    assert same["routers"]["logreg"]["scored"].startswith("out-of-fold")
    # ... and on other questions it is scored as saved.
    new_teacher, new_student, _ = pair_writer(tmp_path / "new", pqal_items[300:], seed=1)
    assert ragroute_main(["router", "eval", "--router", str(fitted), "--teacher", str(new_teacher),
                          "--student", str(new_student), "--out", str(tmp_path / "held_out")]) == 0
    held_out = json.loads((tmp_path / "held_out" / "router_eval.json").read_text())
    logreg = held_out["routers"]["logreg"]
    assert logreg["scored"] == "held-out (router file)"
    assert logreg["apgr"] > held_out["routers"]["random"]["apgr"] + 0.05
    assert logreg["at_threshold"]["teacher_share"] == pytest.approx(0.5, abs=0.12)  # calibrated share holds


def test_predict(fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    questions = tmp_path / "questions.txt"
    questions.write_text("Is aspirin useful after stroke?\n\nWhat is malaria?\n")
    code = ragroute_main(["router", "predict", "--router", str(fitted), "Do statins work?",
                          "--questions", str(questions), "--signals", '{"top_score": 6.5, "margin": 1.0}'])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["question"] for r in rows] == ["Do statins work?", "Is aspirin useful after stroke?", "What is malaria?"]
    for row in rows:
        assert 0 <= row["score"] <= 1 and row["use_teacher"] == (row["score"] >= row["threshold"])


def test_hard_set_is_a_question_file(fitted: Path, record_pair, labelled, tmp_path: Path) -> None:
    teacher, student, _ = record_pair
    out = tmp_path / "hard.jsonl"
    assert ragroute_main(["router", "hard-set", "--router", str(fitted), "--teacher", str(teacher),
                          "--student", str(student), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    failed = {i for i, hard in zip(labelled.ids, labelled.teacher_needed, strict=True) if hard}
    assert failed <= {r["id"] for r in rows}  # every question the student failed is in the curriculum
    assert all(("student_failed" in r["reasons"]) == (r["id"] in failed) for r in rows)
    assert any("routed_to_teacher" in r["reasons"] for r in rows)
    loaded = load_questions(str(out))
    assert not loaded.problems and len(loaded.items) == len(rows)
    assert loaded.items[0].gold_decision in ("yes", "no", "maybe") and loaded.items[0].gold_doc_id
    # From a plain question file: only the router's own decision counts.
    out2 = tmp_path / "hard_from_questions.jsonl"
    assert ragroute_main(["router", "hard-set", "--router", str(fitted), "--questions", str(out), "--out", str(out2)]) == 0
    assert all(json.loads(line)["reasons"] == ["routed_to_teacher"] for line in out2.read_text().splitlines())


def test_bad_inputs_exit_2_with_a_message(fitted: Path, record_pair, tmp_path: Path, capsys) -> None:
    teacher, student, _ = record_pair
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases = [
        (["fit", "--teacher", str(tmp_path / "nope.jsonl"), "--student", str(student), "--out", "x.skops"],
         "teacher records not found"),
        (["fit", "--teacher", str(teacher), "--student", str(empty), "--out", "x.skops"], "is empty"),
        (["fit", "--teacher", str(teacher), "--student", str(student), "--out", "x.skops", "--model", "forest"],
         "unknown router model 'forest'"),
        (["fit", "--teacher", str(teacher), "--student", str(student), "--out", "x.skops", "--bogus-key", "1"],
         None),
        (["eval", "--router", str(fitted), "--config", "configs/router/knn_tfidf.yaml", "--teacher", str(teacher),
          "--student", str(student), "--out", str(tmp_path)], "uses the config stored in the router file"),
        (["predict", "--router", str(fitted)], "no questions"),
        (["predict", "--router", str(fitted), "Q?", "--signals", "[1, 2]"], "--signals must be a JSON object"),
        (["predict", "--router", str(tmp_path / "missing.skops"), "Q?"], "router file not found"),
        (["hard-set", "--router", str(fitted), "--teacher", str(teacher), "--out", str(tmp_path / "h.jsonl")],
         "both --teacher and --student"),
    ]
    for argv, message in cases:
        try:
            code = ragroute_main(["router", *argv])
        except SystemExit as exc:  # argparse rejects unknown flags itself
            code = exc.code
        assert code == 2, argv
        if message:
            assert message in capsys.readouterr().err, argv


def test_every_router_config_loads() -> None:
    paths = sorted((CONFIG_ROOT / "router").glob("*.yaml"))
    assert {p.name for p in paths} >= {"logreg_tfidf.yaml", "gboost_tfidf.yaml", "knn_tfidf.yaml"}
    for path in paths:
        cfg = load_config(RouterConfig, path)
        assert cfg.model in ("logreg", "gboost", "knn")
    # The default config file states the defaults (and the registry grid of logreg) explicitly.
    assert load_config(RouterConfig, CONFIG_ROOT / "router" / "logreg_tfidf.yaml") == RouterConfig(
        param_grid={"C": [0.1, 0.3, 1.0, 3.0, 10.0]}
    )
