"""``ragroute loop --rounds N``: the router's hard questions become new teacher data, the student is retrained
and the router refitted; a round is kept only if held-out APGR and student quality do not drop.

    ragroute loop --config configs/loop/smollm2-135m_pubmedqa.yaml --rounds 2 --out runs/loop

Round 0 splits the questions once (seeded): a held-out set that only measures, a seed training set, and a pool.
The teacher and the starting student answer the held-out and seed sets and a router is fitted on the seed set.
Each round then: the current router scores the next slice of the pool and the questions it sends to the teacher
get teacher answers; the student is trained further on every kept teacher answer plus these; the new student
answers the held-out and training questions; the router is refitted on the training questions; both are measured
on the held-out set (router APGR, student decision accuracy). A round that lowers either is discarded: the
previous student and router stay, and its hard questions do not join the training set. Every step writes under
``--out``; ``loop_report.json`` and ``loop_report.md`` hold the per-round table.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("ragroute.loop")


@dataclass
class LoopConfig:
    questions: str | None = field(default=None, metadata={"help": "questions with gold verdicts (PubMedQA json/JSONL, 'demo')"})
    corpus: str | None = field(default=None, metadata={"help": "documents to retrieve from (default: the questions file)"})
    out: str | None = field(default=None, metadata={"help": "working directory"})
    rounds: int = field(default=1, metadata={"help": "improvement rounds after round 0"})
    holdout: int = field(default=100, metadata={"help": "held-out questions (measurement only)"})
    seed_questions: int = field(default=100, metadata={"help": "training questions of round 0"})
    pool_per_round: int = field(default=100, metadata={"help": "pool questions the router scores per round"})
    train_steps: int = field(default=20, metadata={"help": "distillation steps per round"})
    teacher: str = field(default="smollm2-135m", metadata={"help": "teacher model config name or YAML"})
    student_init: str = field(default="smollm2-135m-pruned", metadata={"help": "the starting student"})
    teacher_data_gen: str = field(default="configs/data_gen/smollm2-135m_pubmedqa_teacher.yaml",
                                  metadata={"help": "data_gen YAML of the teacher's answers"})
    student_data_gen: str = field(default="configs/data_gen/smollm2-135m-pruned_pubmedqa_student.yaml",
                                  metadata={"help": "data_gen YAML of the student's answers"})
    train_config: str = field(default="configs/train/smollm2-135m_to_pruned_kd.yaml", metadata={"help": "train YAML"})
    router_config: str = field(default="configs/router/logreg_tfidf.yaml", metadata={"help": "router YAML"})
    # The user's own changes to the stage YAMLs above (applied when loading them); what the loop sets itself
    # (questions, outputs, models, steps) it sets on the typed configs.
    data_gen_overrides: list[str] = field(default_factory=list, metadata={"help": "key=value for both data_gen YAMLs"})
    train_overrides: list[str] = field(default_factory=list, metadata={"help": "key=value for the train YAML"})
    router_overrides: list[str] = field(default_factory=list, metadata={"help": "key=value for the router YAML"})
    allowed_drop: float = field(default=0.0, metadata={"help": "a round is kept if neither measure drops by more"})
    seed: int = field(default=0, metadata={"help": "seed of the question split"})

    def __post_init__(self) -> None:
        for name in ("rounds", "holdout", "seed_questions", "pool_per_round", "train_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.allowed_drop < 0:
            raise ValueError(f"allowed_drop must be >= 0, not {self.allowed_drop}")


def question_row(item: Any) -> dict[str, Any]:
    row = {"id": item.id, "question": item.question, "long_answer": item.gold_answer,
           "final_decision": item.gold_decision, "doc_id": item.gold_doc_id}
    return {k: v for k, v in row.items() if v is not None}


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def split_questions(items: list[Any], cfg: LoopConfig) -> tuple[list[Any], list[Any], list[Any]]:
    """(held-out, seed training set, pool) after a seeded shuffle."""
    needed = cfg.holdout + cfg.seed_questions + cfg.pool_per_round
    if len(items) < needed:
        from ragroute.errors import UserError

        raise UserError(f"{len(items)} questions; the loop needs at least holdout + seed_questions + pool_per_round "
                        f"= {needed}")
    shuffled = list(items)
    random.Random(cfg.seed).shuffle(shuffled)
    held, rest = shuffled[: cfg.holdout], shuffled[cfg.holdout :]
    return held, rest[: cfg.seed_questions], rest[cfg.seed_questions :]


class Workspace:
    """The loop's stage calls, each writing under ``out``."""

    def __init__(self, cfg: LoopConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.corpus = cfg.corpus or cfg.questions

    def answers(self, config: str, model: str, rows: list[dict[str, Any]], name: str) -> Path:
        """data_gen answers of ``model`` to ``rows``; returns the records file."""
        from dataclasses import replace

        from data_gen.config import DataGenConfig
        from data_gen.main import main as data_gen_main
        from ragroute.config import load_config

        questions = write_jsonl(rows, self.out / "questions" / f"{name}.jsonl")
        out = self.out / "answers" / name
        base = load_config(DataGenConfig, config, self.cfg.data_gen_overrides)
        data_gen_main(replace(base, questions=str(questions), corpus=self.corpus, out=str(out), model_config=model,
                              limit=None))
        return out / "records.jsonl"

    def train(self, student: str, records: list[Path], name: str) -> str:
        """Distill ``student`` further on the teacher records; returns a model YAML of the result."""
        from dataclasses import replace

        from evaluation.demo import write_model_spec
        from ragroute.config import load_config
        from ragroute.models import ModelSpec
        from train.config import TrainConfig
        from train.main import main as train_main

        data = self.out / "train" / name / "data.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(p.read_text() for p in records))
        base = load_config(TrainConfig, self.cfg.train_config, self.cfg.train_overrides)
        report = train_main(replace(base, data=str(data), output_dir=str(data.parent / "run"),
                                    max_steps=self.cfg.train_steps, teacher=self.cfg.teacher,
                                    student=replace(base.student, model=student)))
        spec = ModelSpec(name=f"loop-student-{name}", path=report["final_model"], max_model_len=2048,
                         description=f"the loop's student after round {name}")
        return str(write_model_spec(spec, data.parent / "student.yaml"))

    def router(self, teacher: Path, student: Path, name: str) -> Path:
        from ragroute.config import load_config
        from router.config import RouterConfig
        from router.main import fit_main

        path = self.out / "routers" / f"{name}.skops"
        path.parent.mkdir(parents=True, exist_ok=True)
        fit_main(load_config(RouterConfig, self.cfg.router_config, self.cfg.router_overrides), str(teacher),
                 str(student), str(path))
        return path

    def measure(self, router: Path, teacher: Path, student: Path, name: str) -> dict[str, Any]:
        """Held-out APGR of ``router`` and the student's held-out quality (the router's label metric)."""
        from router.main import eval_main

        report = eval_main(None, str(teacher), str(student), str(self.out / "eval" / name), str(router))
        trained = next(s for s in report["routers"].values() if s.get("kind") == "trained")
        return {"apgr": trained["apgr"], "student_quality": report["fixed"]["always_student"]["quality"],
                "teacher_quality": report["fixed"]["always_teacher"]["quality"]}


def split_records(records: Path, ids: set[str], out: Path) -> Path:
    """The records of ``ids`` from a data_gen output, as their own file."""
    lines = [line for line in records.read_text().splitlines() if json.loads(line)["id"] in ids]
    return write_jsonl([json.loads(line) for line in lines], out)


def kept(previous: dict[str, Any], current: dict[str, Any], allowed_drop: float) -> bool:
    """Neither the held-out APGR nor the student's held-out quality dropped (an undefined APGR never blocks)."""
    if current["student_quality"] < previous["student_quality"] - allowed_drop:
        return False
    if previous["apgr"] is None or current["apgr"] is None:
        return True
    return current["apgr"] >= previous["apgr"] - allowed_drop


def student_round(ws: Workspace, student: str, held: list[dict], train: list[dict], name: str) -> tuple[Path, Path]:
    """The student's held-out and training answers (one data_gen run, split by id)."""
    records = ws.answers(ws.cfg.student_data_gen, student, held + train, f"student_{name}")
    return (split_records(records, {r["id"] for r in held}, ws.out / "split" / name / "student_holdout.jsonl"),
            split_records(records, {r["id"] for r in train}, ws.out / "split" / name / "student_train.jsonl"))


def hard_questions(router: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the router sends to the teacher (at least one: the highest-scoring, so every round has data)."""
    from router.persist import load_router

    bundle = load_router(str(router))
    scores = bundle.score([r["question"] for r in rows])
    hard = [r for r, s in zip(rows, scores, strict=True) if s >= bundle.threshold]
    return hard or [rows[int(scores.argmax())]]


def run_loop(cfg: LoopConfig) -> dict[str, Any]:
    from ragroute.errors import UserError
    from ragroute.rag.corpus import load_questions

    if not cfg.questions or not cfg.out:
        raise UserError("the loop needs --questions FILE and --out DIR")
    out = Path(cfg.out)
    ws = Workspace(cfg, out)
    held_items, seed_items, pool_items = split_questions(load_questions(cfg.questions).items, cfg)
    held, train, pool = ([question_row(q) for q in part] for part in (held_items, seed_items, pool_items))
    teacher_all = ws.answers(cfg.teacher_data_gen, cfg.teacher, held + train, "teacher_round0")
    teacher_held = split_records(teacher_all, {r["id"] for r in held}, out / "split" / "teacher_holdout.jsonl")
    teacher_train = [split_records(teacher_all, {r["id"] for r in train}, out / "split" / "teacher_seed.jsonl")]
    student = cfg.student_init
    student_held, student_train = student_round(ws, student, held, train, "round0")
    router = ws.router(_joined(teacher_train, out / "split" / "round0" / "teacher_train.jsonl"), student_train, "round0")
    best = {"round": 0, "new_questions": 0, "train_questions": len(train), "kept": True,
            **ws.measure(router, teacher_held, student_held, "round0")}
    rows = [best]
    for number in range(1, cfg.rounds + 1):
        scored, pool = pool[: cfg.pool_per_round], pool[cfg.pool_per_round :]
        if not scored:
            log.warning("the question pool is used up after round %d", number - 1)
            break
        name = f"round{number}"
        hard = hard_questions(router, scored)
        new_teacher = ws.answers(cfg.teacher_data_gen, cfg.teacher, hard, f"teacher_{name}")
        candidate = ws.train(student, [*teacher_train, new_teacher], name)
        cand_held, cand_train = student_round(ws, candidate, held, train + hard, name)
        teacher_joined = _joined([*teacher_train, new_teacher], out / "split" / name / "teacher_train.jsonl")
        cand_router = ws.router(teacher_joined, cand_train, name)
        measured = ws.measure(cand_router, teacher_held, cand_held, name)
        keep = kept(best, measured, cfg.allowed_drop)
        row = {"round": number, "new_questions": len(hard), "train_questions": len(train) + len(hard) * keep,
               "kept": keep, **measured}
        rows.append(row)
        if keep:
            student, router, train, best = candidate, cand_router, train + hard, row
            teacher_train.append(new_teacher)
    report = {"config": asdict(cfg), "rounds": rows, "final_student": student, "final_router": str(router)}
    (out / "loop_report.json").write_text(json.dumps(report, indent=2))
    (out / "loop_report.md").write_text(report_table(rows))
    return report


def _joined(paths: list[Path], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(p.read_text() for p in paths))
    return out


def report_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return "undefined" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    lines = ["| round | new hard questions | training questions | held-out APGR | student quality | teacher quality "
             "| kept |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['new_questions']} | {r['train_questions']} | {cell(r['apgr'])} | "
                     f"{cell(r['student_quality'])} | {cell(r['teacher_quality'])} | {'yes' if r['kept'] else 'no'} |")
    return "\n".join(lines) + "\n"


def cli(argv: list[str]) -> int:
    from ragroute.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="ragroute loop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, LoopConfig)
    report = run_loop(config_from_args(LoopConfig, parser.parse_args(argv)))
    print(report_table(report["rounds"]), end="")
    return 0
