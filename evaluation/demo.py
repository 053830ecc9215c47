"""``ragroute demo``: the whole loop on the bundled demo corpus (or any dataset), on a 2-core CPU.

prepare models ▶ teacher answers (data_gen) ▶ distill the student (train) ▶ student answers (data_gen) ▶
fit the router ▶ evaluate teacher-only / student-only / routed ▶ summary table.

Every step writes under ``--out`` (default ``$RAGROUTE_HOME/demo``) and is skipped when its output exists, so
a rerun is fast and a killed run continues where it stopped. ``ragroute eval`` without --config then uses the
student and router made here.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.config import load_config

TEACHER_DATA_GEN = "configs/data_gen/smollm2-135m_demo_teacher.yaml"
STUDENT_DATA_GEN = "configs/data_gen/smollm2-135m-pruned_demo_student.yaml"
TRAIN = "configs/train/smollm2-135m_to_pruned_kd.yaml"
ROUTER = "configs/router/demo_logreg_tfidf.yaml"
EVAL = "configs/eval/smollm2-135m_demo.yaml"


@dataclass
class DemoConfig:
    dataset: str = field(default="demo", metadata={"help": "questions (+ their abstracts as corpus): 'demo' or a file"})
    corpus: str | None = field(default=None, metadata={"help": "documents to retrieve from (default: see dataset)"})
    out: str | None = field(default=None, metadata={"help": "working directory (default: $RAGROUTE_HOME/demo)"})
    limit: int | None = field(default=None, metadata={"help": "only the first N questions"})
    train_steps: int = field(default=16, metadata={"help": "distillation steps (~4 s each on 2 idle cores)"})
    teacher: str = field(default="smollm2-135m", metadata={"help": "teacher model config name or YAML path"})
    student_init: str = field(
        default="smollm2-135m-pruned", metadata={"help": "model the student starts from (config name or YAML path)"}
    )
    engine: str = field(default="vllm", metadata={"help": "generation engine: vllm or transformers"})
    max_tokens: int | None = field(default=None, metadata={"help": "answer length (default: the data_gen configs')"})
    router_config: str = field(default=ROUTER, metadata={"help": "router YAML (labels, features, model)"})
    latency_sample: int | None = field(
        default=None,
        metadata={"help": "questions answered one at a time for the latency figures (default: the eval config's)"},
    )
    fresh: bool = field(default=False, metadata={"help": "delete the working directory first and redo every step"})

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, not {self.limit}")
        if self.latency_sample is not None and self.latency_sample < 0:
            raise ValueError(f"latency_sample must be >= 0, not {self.latency_sample}")
        if self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, not {self.train_steps}")


def step(number: int, title: str, done: bool) -> None:
    from rich.console import Console

    Console().rule(f"[bold]{number}/6 {title}" + (" [green](done, skipped)" if done else ""))


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    from data_gen.config import DataGenConfig
    from data_gen.main import main as data_gen_main
    from evaluation.config import EvalConfig
    from evaluation.main import main as eval_main
    from ragroute.models import load_model_spec, models_dir, prepare_model, ragroute_home
    from router.config import RouterConfig
    from router.main import fit_main
    from train.config import TrainConfig
    from train.main import main as train_main

    # Another dataset gets its own directory, so its answers never collide with the bundled demo's.
    default_name = "demo" if cfg.dataset == "demo" else f"demo-{Path(cfg.dataset).stem}"
    out = Path(cfg.out) if cfg.out else ragroute_home() / default_name
    if cfg.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    limit = f"limit={cfg.limit if cfg.limit is not None else 'null'}"
    generation = [f"engine.name={cfg.engine}"] + ([f"sampling.max_tokens={cfg.max_tokens}"] if cfg.max_tokens else [])
    inputs = [f"questions={cfg.dataset}", f"corpus={cfg.corpus or ('demo' if cfg.dataset == 'demo' else 'null')}",
              limit, *generation]

    specs = [load_model_spec(name) for name in (cfg.teacher, cfg.student_init)]
    prepared = all(not s.path.startswith("ragroute:") or (models_dir() / s.path[9:] / "ragroute_model.json").exists()
                   for s in specs)
    step(1, "prepare the offline models", prepared)
    for spec in specs:
        prepare_model(spec)

    step(2, "teacher answers the questions (data_gen, vLLM)", (out / "teacher" / "records.jsonl").exists())
    data_gen_main(load_config(DataGenConfig, TEACHER_DATA_GEN,
                              inputs + [f"out={out / 'teacher'}", f"model_config={cfg.teacher}"]))

    student_spec = out / "student.yaml"
    step(3, "distill the student from the teacher's answers (train)", student_spec.exists())
    if not student_spec.exists():
        train_cfg = load_config(TrainConfig, TRAIN, [
            f"data={out / 'teacher' / 'records.jsonl'}", f"output_dir={out / 'train'}",
            f"max_steps={cfg.train_steps}", f"teacher={cfg.teacher}", f"student.model={cfg.student_init}",
        ])
        report = train_main(train_cfg)
        student_spec.write_text(
            f"name: smollm2-135m-distilled\npath: {report['final_model']}\ndtype: auto\nmax_model_len: 2048\n"
            f"description: the pruned SmolLM2 student after {report['steps']} distillation steps (ragroute demo)\n"
        )

    step(4, "student answers the questions (data_gen, vLLM)", (out / "student" / "manifest.json").exists())
    data_gen_main(load_config(DataGenConfig, STUDENT_DATA_GEN,
                              inputs + [f"out={out / 'student'}", f"model_config={student_spec}"]))

    router_path = out / "router.skops"
    step(5, "fit the router (scikit-learn, skops)", router_path.exists())
    if not router_path.exists():
        fit_main(load_config(RouterConfig, cfg.router_config), str(out / "teacher"), str(out / "student"), str(router_path))

    step(6, "evaluate teacher-only / student-only / routed", False)
    # Pipeline and sampling: those the router file recorded (the demo's data_gen runs), not set again here.
    result = eval_main(load_config(EvalConfig, EVAL, [
        f"dataset={cfg.dataset}", f"out={out / 'eval'}", f"student={student_spec}", f"router={router_path}",
        f"teacher={cfg.teacher}", f"teacher_records={out / 'teacher'}", f"student_records={out / 'student'}", limit,
        f"engine.name={cfg.engine}",
        *([f"latency_sample={cfg.latency_sample}"] if cfg.latency_sample is not None else []),
    ]))
    result["demo_wall_s"] = time.perf_counter() - started
    print_summary(result, out)
    return result


def print_summary(result: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ragroute demo: {result['n']} questions")
    for column in ("system", "acc", "F1", "ROUGE-L", "cites ok", "gen p50 s", "total p50 s", "batch q/min", "teacher"):
        table.add_column(column, justify="right" if column != "system" else "left")

    def cell(value: Any, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    for name, m in result["systems"].items():
        table.add_row(name, cell(m["accuracy"]), cell(m["macro_f1"]), cell(m["rouge_l"]), cell(m["citation_valid"]),
                      cell(m["gen_latency_p50_s"], 2), cell(m["total_latency_p50_s"], 2), cell(m["batch_q_per_min"], 1),
                      cell(m["teacher_share"], 2))
    console = Console()
    console.print(table)
    if result.get("routed_vs_teacher_latency_ratio"):
        console.print(f"routed / teacher-only latency (single-stream p50): {result['routed_vs_teacher_latency_ratio']:.2f}x")
    console.print(f"latencies: {result['latency_sample']} questions answered one at a time; "
                  "batch q/min: the batched answering's throughput")
    console.print(f"report: {out / 'eval' / 'report.md'}   metrics: {out / 'eval' / 'metrics.json'}   "
                  f"({result['demo_wall_s']:.0f} s)")
    console.print("the demo evaluates on the questions it trained on; for held-out numbers run "
                  "`ragroute eval --dataset FILE --out DIR`")


def cli(argv: list[str]) -> int:
    from ragroute.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="ragroute demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DemoConfig)
    args = parser.parse_args(argv)
    result = run_demo(config_from_args(DemoConfig, args))
    print(json.dumps({"n": result["n"], "wall_s": round(result["demo_wall_s"], 1)}))
    return 0
