"""Paired teacher/student AnswerRecord files whose hard questions follow a learnable rule.

Questions come from the shared PubMedQA dev set. A question is hard for the synthetic student (its verdict
differs from the teacher's) mostly when it is long and its retrieval is weak; a few labels are flipped at random
so no router is perfect. Timings make the teacher 3x slower than the student.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ragroute.records import AnswerRecord, JsonlWriter


def load_pqal(path: Path, n: int) -> list[tuple[str, dict]]:
    data = json.loads(path.read_text())
    return list(data.items())[:n]


def write_pair(
    out_dir: Path, items: list[tuple[str, dict]], seed: int = 0, noise: float = 0.1
) -> tuple[Path, Path, list[bool]]:
    """teacher.jsonl, student.jsonl and the intended hardness of each question."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    teacher_path, student_path = out_dir / "teacher.jsonl", out_dir / "student.jsonl"
    hardness = []
    flip = {"yes": "no", "no": "yes", "maybe": "yes"}
    with JsonlWriter(teacher_path, fsync=False) as tw, JsonlWriter(student_path, fsync=False) as sw:
        for pmid, item in items:
            question = item["QUESTION"]
            long_question = len(question.split()) > 12
            top = rng.uniform(4, 8) if long_question else rng.uniform(8, 14)
            scores = sorted([top] + [rng.uniform(1, top) for _ in range(4)], reverse=True)
            hard = long_question and top < 7
            if rng.random() < noise:
                hard = not hard
            hardness.append(hard)
            gold = item["final_decision"]
            teacher_decision = gold if rng.random() < 0.9 else flip[gold]
            student_decision = flip[teacher_decision] if hard else teacher_decision
            common = dict(
                id=str(pmid), question=question, doc_ids=[str(pmid), "x1", "x2", "x3", "x4"], doc_scores=scores,
                gold_answer=item["LONG_ANSWER"], gold_decision=gold, gold_doc_id=str(pmid),
            )
            tw.write(AnswerRecord(
                answer=f"{teacher_decision.capitalize()}. {item['LONG_ANSWER'][:200]} [0]", model="teacher",
                timings={"retrieval": 0.2, "generation": 3.0 + rng.random()}, **common))
            sw.write(AnswerRecord(
                answer=f"{student_decision.capitalize()}. The study suggests so [1].", model="student",
                timings={"retrieval": 0.2, "generation": 1.0 + rng.random() * 0.3}, **common))
    return teacher_path, student_path, hardness


@pytest.fixture(scope="session")
def pqal_items(pqal_dev_path: Path) -> list[tuple[str, dict]]:
    return load_pqal(pqal_dev_path, 500)


@pytest.fixture(scope="session")
def record_pair(tmp_path_factory: pytest.TempPathFactory, pqal_items) -> tuple[Path, Path, list[bool]]:
    """300 questions of paired records (shared by the tests that only read them)."""
    return write_pair(tmp_path_factory.mktemp("records"), pqal_items[:300])


@pytest.fixture(scope="session")
def fast_config():
    """A quick logistic-regression router config (3 folds, two grid points) for tests."""
    from router.config import RouterConfig

    return RouterConfig(cv_folds=3, param_grid={"C": [0.3, 3.0]}, threshold_target=0.4)


@pytest.fixture(scope="session")
def labelled(record_pair, fast_config):
    from router.labels import build_labels

    teacher, student, _ = record_pair
    return build_labels(teacher, student, fast_config.labels)


@pytest.fixture(scope="session")
def fitted_bundle(labelled, fast_config):
    from router.fit import fit_router

    return fit_router(labelled, fast_config)


@pytest.fixture(scope="session")
def pair_writer():
    """``write_pair`` for tests that need records of other questions (conftest is not importable as a module)."""
    return write_pair
