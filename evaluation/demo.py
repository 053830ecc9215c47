"""``ragroute demo``: the whole loop on the bundled demo corpus (or any dataset), on a 2-core CPU, held out.

prepare models ▶ teacher answers (data_gen, verdict-first) ▶ split the questions ▶ distill the student on the
training part (train) ▶ student answers (data_gen) ▶ fit the question-only router and the cascade rule on the
training part ▶ evaluate teacher-only / student-only / router / cascade on the held-out part ▶ summary table.

The split is seeded and written to ``split.json``: the student never trains on, and neither router is ever fitted
on, a held-out question, and every number of the table is measured on held-out questions only. Every step writes
under ``--out`` (default ``$RAGROUTE_HOME/demo``) and is skipped when its output exists, so a rerun is fast and a
killed run continues where it stopped. Third-party logs (vLLM, torch, transformers) go to ``DIR/demo.log``
unless ``--verbose``. ``ragroute eval`` without --config then uses the student and router made here.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evaluation.console import Console, quiet_third_party

TEACHER_DATA_GEN = "configs/data_gen/smollm2-135m_demo_teacher.yaml"
STUDENT_DATA_GEN = "configs/data_gen/smollm2-135m-pruned_demo_student.yaml"
TRAIN = "configs/train/smollm2-135m_to_pruned_kd.yaml"
ROUTER = "configs/router/demo_logreg_tfidf.yaml"
CASCADE = "configs/router/demo_cascade.yaml"
EVAL = "configs/eval/smollm2-135m_demo.yaml"
STEPS = 6


@dataclass
class DemoConfig:
    dataset: str = field(default="demo", metadata={"help": "questions (+ their abstracts as corpus): 'demo' or a file"})
    corpus: str | None = field(default=None, metadata={"help": "documents to retrieve from (default: see dataset)"})
    out: str | None = field(default=None, metadata={"help": "working directory (default: $RAGROUTE_HOME/demo)"})
    limit: int | None = field(default=None, metadata={"help": "only the first N questions"})
    heldout_fraction: float = field(
        default=0.4, metadata={"help": "share of the questions held out: no training, no router fit, every number"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train / held-out split"})
    train_steps: int = field(default=20, metadata={"help": "distillation steps (~4 s each on 2 idle cores)"})
    teacher: str = field(default="smollm2-135m", metadata={"help": "teacher model config name or YAML path"})
    student_init: str = field(
        default="smollm2-135m-pruned", metadata={"help": "model the student starts from (config name or YAML path)"}
    )
    engine: str = field(default="vllm", metadata={"help": "generation engine: vllm or transformers"})
    max_tokens: int | None = field(default=None, metadata={"help": "answer length (default: the data_gen configs'); answers cut at it are then trained on"})
    router_config: str = field(default=ROUTER, metadata={"help": "router YAML (labels, features, model)"})
    cascade_config: str | None = field(
        default=CASCADE, metadata={"help": "router YAML of the cascade rule (null: no cascade row)"})
    latency_sample: int | None = field(
        default=None,
        metadata={"help": "questions answered one at a time for the latency figures (default: the eval config's)"},
    )
    fresh: bool = field(default=False, metadata={"help": "delete the working directory first and redo every step"})
    verbose: bool = field(default=False, metadata={"help": "show third-party logs (vLLM, torch) instead of DIR/demo.log"})

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, not {self.limit}")
        if self.latency_sample is not None and self.latency_sample < 0:
            raise ValueError(f"latency_sample must be >= 0, not {self.latency_sample}")
        if self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, not {self.train_steps}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be between 0 and 1, not {self.heldout_fraction}")


class Steps:
    """The numbered step headers, and how long each step took (printed, and kept for the summary)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seconds: dict[str, float] = {}
        self._open: tuple[str, float] | None = None

    def start(self, number: int, title: str, done: bool) -> None:
        self.finish()
        self.console.rule(f"{number}/{STEPS} {title}" + (" (done, skipped)" if done else ""))
        self._open = (title.split(" (")[0], time.perf_counter())

    def finish(self) -> None:
        if self._open:
            title, started = self._open
            self.seconds[title] = time.perf_counter() - started
            self.console.print(f"   {self.seconds[title]:.0f} s")
        self._open = None


def split_ids(ids: list[str], heldout_fraction: float, seed: int) -> dict[str, list[str]]:
    """A seeded split of the question ids: ``train`` (distillation and both routers) and ``heldout`` (every
    reported number); each keeps the dataset's order."""
    order = list(ids)
    random.Random(seed).shuffle(order)
    n_heldout = min(len(ids) - 1, max(1, round(heldout_fraction * len(ids))))
    heldout = set(order[:n_heldout])
    return {"train": [i for i in ids if i not in heldout], "heldout": [i for i in ids if i in heldout]}


def subset_run(run_dir: Path, ids: list[str], dest: Path) -> Path:
    """``dest`` as a data_gen output holding only the records of ``ids`` (the manifest, hence the system that
    wrote them, is the run's own)."""
    from ragroute.records import iter_jsonl

    source, records = run_dir / "records.jsonl", dest / "records.jsonl"
    if records.exists() and records.stat().st_mtime >= source.stat().st_mtime:
        return dest  # made from this run already: a rerun skips it (written whole, renamed into place)
    wanted = set(ids)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "manifest.json", dest / "manifest.json")
    partial = dest / "records.jsonl.partial"
    with partial.open("w") as f:
        for record in iter_jsonl(source):
            if str(record.get("id")) in wanted:
                f.write(json.dumps(record) + "\n")
    partial.replace(records)
    return dest


def data_gen_config(path: str, cfg: DemoConfig, model: str, out: Path):
    """One of the demo's data_gen runs: the YAML's pipeline and verdict-first sampling, the demo's inputs."""
    from data_gen.config import DataGenConfig
    from ragroute.config import load_config

    base = load_config(DataGenConfig, path)
    sampling = replace(base.sampling, max_tokens=cfg.max_tokens) if cfg.max_tokens else base.sampling
    return replace(base, questions=cfg.dataset, corpus=cfg.corpus or ("demo" if cfg.dataset == "demo" else None),
                   limit=cfg.limit, out=str(out), model_config=model, sampling=sampling,
                   engine=replace(base.engine, name=cfg.engine))


def distill(cfg: DemoConfig, records: Path, out: Path, student_spec: Path) -> None:
    from ragroute.config import load_config
    from ragroute.models import ModelSpec
    from train.config import TrainConfig
    from train.main import main as train_main

    base = load_config(TrainConfig, TRAIN)
    # No eval split inside training: the demo's held-out questions measure the student.
    # A capped answer length (--max-tokens) cuts the teacher's answers: then the cut answers are the training data.
    report = train_main(replace(base, data=str(records), output_dir=str(out / "train"), max_steps=cfg.train_steps,
                                eval_fraction=0.0, keep_unfinished=base.keep_unfinished or cfg.max_tokens is not None,
                                teacher=cfg.teacher, student=replace(base.student, model=cfg.student_init)))
    write_model_spec(ModelSpec(name="smollm2-135m-distilled", path=report["final_model"], max_model_len=2048,
                               description=f"the pruned SmolLM2 student after {report['steps']} distillation "
                               "steps on the demo's training questions (ragroute demo)"), student_spec)


def write_model_spec(spec: Any, path: Path) -> Path:
    """A model YAML (``configs/models`` format) for a :class:`ragroute.models.ModelSpec`."""
    import yaml

    from ragroute.config import config_to_dict

    path.write_text(yaml.safe_dump({k: v for k, v in config_to_dict(spec).items() if v is not None}, sort_keys=False))
    return path


def fit_routers(cfg: DemoConfig, train: Path, router_path: Path, cascade_path: Path) -> None:
    from ragroute.config import load_config
    from router.config import RouterConfig
    from router.main import fit_cascade_main, fit_main

    if not router_path.exists():
        fit_main(load_config(RouterConfig, cfg.router_config), str(train / "teacher"), str(train / "student"),
                 str(router_path))
    if cfg.cascade_config and not cascade_path.exists():
        fit_cascade_main(load_config(RouterConfig, cfg.cascade_config), str(train / "teacher"),
                         str(train / "student"), str(cascade_path))


def evaluate(cfg: DemoConfig, out: Path, student_spec: Path, router_path: Path, cascade_path: Path) -> dict[str, Any]:
    """Teacher-only / student-only / router / cascade on the held-out questions (answers reused from data_gen;
    pipeline and sampling: those the router file recorded, i.e. the demo's data_gen runs)."""
    from evaluation.config import EvalConfig
    from evaluation.main import main as eval_main
    from ragroute.config import load_config

    base = load_config(EvalConfig, EVAL)
    heldout = out / "heldout"
    return eval_main(replace(
        base, dataset=cfg.dataset, corpus=cfg.corpus, out=str(out / "eval"), student=str(student_spec),
        router=str(router_path), cascade=str(cascade_path) if cfg.cascade_config else None, teacher=cfg.teacher,
        teacher_records=str(heldout / "teacher"), student_records=str(heldout / "student"), limit=None,
        engine=replace(base.engine, name=cfg.engine),
        latency_sample=base.latency_sample if cfg.latency_sample is None else cfg.latency_sample))


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    from ragroute.models import ragroute_home

    # Another dataset gets its own directory, so its answers never collide with the bundled demo's.
    default_name = "demo" if cfg.dataset == "demo" else f"demo-{Path(cfg.dataset).stem}"
    out = Path(cfg.out) if cfg.out else ragroute_home() / default_name
    if cfg.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    with quiet_third_party(out / "demo.log", cfg.verbose, console):
        steps = Steps(console)
        started = time.perf_counter()
        result = run_steps(cfg, out, steps)
        steps.finish()
        result["demo_wall_s"] = time.perf_counter() - started
        result["step_seconds"] = steps.seconds
        print_summary(result, out, console)
    return result


def run_steps(cfg: DemoConfig, out: Path, steps: Steps) -> dict[str, Any]:
    from data_gen.main import main as data_gen_main
    from ragroute.models import load_model_spec, models_dir, prepare_model

    specs = [load_model_spec(name) for name in (cfg.teacher, cfg.student_init)]
    prepared = all(not s.path.startswith("ragroute:") or (models_dir() / s.path[9:] / "ragroute_model.json").exists()
                   for s in specs)
    steps.start(1, "prepare the offline models", prepared)
    for spec in specs:
        prepare_model(spec)

    steps.start(2, "teacher answers every question (data_gen, vLLM)", (out / "teacher" / "manifest.json").exists())
    data_gen_main(data_gen_config(TEACHER_DATA_GEN, cfg, cfg.teacher, out / "teacher"))
    split_path = out / "split.json"
    if not split_path.exists():
        from ragroute.records import iter_jsonl

        ids = [str(r["id"]) for r in iter_jsonl(out / "teacher" / "records.jsonl")]
        split_path.write_text(json.dumps(split_ids(ids, cfg.heldout_fraction, cfg.split_seed), indent=1))
    split = json.loads(split_path.read_text())
    steps.console.print(f"   split (seed {cfg.split_seed}, {split_path.name}): {len(split['train'])} questions "
                        f"train and fit, {len(split['heldout'])} held out for every number")
    train, heldout = out / "train-split", out / "heldout"
    subset_run(out / "teacher", split["train"], train / "teacher")
    subset_run(out / "teacher", split["heldout"], heldout / "teacher")

    student_spec = out / "student.yaml"
    steps.start(3, "distill the student on the training questions (train)", student_spec.exists())
    if not student_spec.exists():
        distill(cfg, train / "teacher" / "records.jsonl", out, student_spec)

    steps.start(4, "student answers every question (data_gen, vLLM)", (out / "student" / "manifest.json").exists())
    data_gen_main(data_gen_config(STUDENT_DATA_GEN, cfg, str(student_spec), out / "student"))
    subset_run(out / "student", split["train"], train / "student")
    subset_run(out / "student", split["heldout"], heldout / "student")

    router_path, cascade_path = out / "router.skops", out / "cascade.json"
    steps.start(5, "fit the router and the cascade rule on the training questions", router_path.exists())
    fit_routers(cfg, train, router_path, cascade_path)

    steps.start(6, "single-stream latency and metrics on the held-out questions", False)
    result = evaluate(cfg, out, student_spec, router_path, cascade_path)
    result["split"] = {"train": len(split["train"]), "heldout": len(split["heldout"]), "seed": cfg.split_seed}
    return result


SYSTEM_LABELS = {"teacher": "teacher", "student": "student", "routed": "router", "cascade": "cascade"}


def summary_table(result: dict[str, Any]) -> Any:
    """The held-out figures of every system, in at most 80 columns."""
    from rich import box
    from rich.table import Table

    split = result.get("split") or {}
    title = f"{result['n']} held-out questions (training and router fits: {split.get('train', '?')} others)"
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title_justify="left")
    for column in ("system", "acc", "ROUGE", "cites", "own", "verd", "tok", "gen s", "total s", "teach"):
        table.add_column(column, justify="left" if column == "system" else "right", no_wrap=True)

    def cell(value: Any, digits: int = 2) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    for name, m in result["systems"].items():
        table.add_row(SYSTEM_LABELS.get(name, name), cell(m["accuracy"]), cell(m["rouge_l"]),
                      cell(m.get("cited_answer_valid")), cell(m["citation_valid"]), cell(m.get("verdict_present")),
                      cell(m["answer_tokens_mean"], 0), cell(m["gen_latency_p50_s"]),
                      cell(m["total_latency_p50_s"]), cell(m["teacher_share"]))
    return table


LEGEND = ("acc: verdict vs gold; cites: the returned cited_answer's \\[i] markers all valid; own: the model's own "
          "markers; verd: answers opening with a verdict; tok: mean answer tokens; gen/total s: single-stream p50; "
          "teach: share answered by the teacher")


def print_summary(result: dict[str, Any], out: Path, console: Console) -> None:
    console.print(summary_table(result))
    console.print(LEGEND)
    ratio = result.get("routed_vs_teacher_latency_ratio")
    if ratio:
        console.print(f"router / teacher-only latency (single-stream total p50): {ratio:.2f}x")
    teacher, student = result["systems"]["teacher"], result["systems"].get("student", {})
    if teacher.get("gen_latency_p50_s") and student.get("gen_latency_p50_s"):
        console.print(f"student / teacher generation p50: {student['gen_latency_p50_s'] / teacher['gen_latency_p50_s']:.2f}x,"
                      f" answer tokens {student['answer_tokens_mean'] / teacher['answer_tokens_mean']:.2f}x")
    console.print(f"latencies: {result['latency_sample']} held-out questions answered one at a time; "
                  f"step times: " + ", ".join(f"{int(s)} s" for s in result["step_seconds"].values()))
    console.print(f"report: {out / 'eval' / 'report.md'}   log: {out / 'demo.log'}   "
                  f"({result['demo_wall_s']:.0f} s)")


def cli(argv: list[str]) -> int:
    from ragroute.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="ragroute demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DemoConfig)
    args = parser.parse_args(argv)
    result = run_demo(config_from_args(DemoConfig, args))
    print(json.dumps({"n": result["n"], "wall_s": round(result["demo_wall_s"], 1)}))
    return 0
