"""data_gen entry point: ``run(cfg)`` runs one (shard of a) dataset generation, resumably, and returns the
:class:`~ragroute.artifacts.RecordsRun` it wrote; ``main(cfg)`` returns its counts."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from data_gen.config import DataGenConfig
from data_gen.generate import answer_questions
from data_gen.inputs import load_inputs, select_shard
from data_gen.manifest import check_resumable, identity_hash, output_identity, run_system, write_manifest
from ragroute.artifacts import RecordsRun
from ragroute.errors import UserError

log = logging.getLogger("ragroute.data_gen")


def run(cfg: DataGenConfig) -> RecordsRun:
    """Answer the questions of ``cfg`` (resuming what an earlier run with the same identity wrote); the records
    and manifest written, as a :class:`RecordsRun`."""
    if not cfg.out:
        raise UserError("no output directory given (--out DIR)")
    if cfg.executor == "local" and cfg.engine.vllm.data_parallel_size > 1:
        from data_gen.parallel import run_data_parallel

        run_data_parallel(cfg)
        return RecordsRun.load(cfg.out, require_manifest=True)
    if cfg.executor == "ray":
        from data_gen.ray_executor import require_ray

        require_ray()
    return _run_shard(cfg)


def main(cfg: DataGenConfig) -> dict:
    """``run(cfg)``; the counts of what it did (questions, already done, written, problems, elapsed_s)."""
    return run(cfg).counts


def _run_shard(cfg: DataGenConfig) -> RecordsRun:
    from ragroute.models import load_model_spec
    from ragroute.records import finished_ids

    started = time.time()
    spec = load_model_spec(cfg.model_config)
    inputs = load_inputs(cfg.questions, cfg.corpus or cfg.pipeline.corpus)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    run = RecordsRun.at(cfg.out, cfg.shard_index, cfg.shard_count)
    identity = output_identity(cfg, spec)
    system = run_system(cfg, spec)
    config_hash = identity_hash(identity)
    if not check_resumable(run, config_hash, cfg.overwrite):
        run.records_path.unlink(missing_ok=True)
    done = finished_ids(run.records_path)
    mine = select_shard(inputs.questions, cfg.shard_index, cfg.shard_count, cfg.limit)
    todo = [q for q in mine if q.id not in done]
    counts = {"questions": len(mine), "already_done": len(mine) - len(todo), "written": 0,
              "problems": len(inputs.problems), "problem_examples": inputs.problems[:20]}
    write_manifest(run, cfg, identity, counts, started, system)
    log.info(f"data-gen: {len(mine)} questions for shard {cfg.shard}, {counts['already_done']} already done, "
          f"{len(inputs.problems)} input problems skipped; writing {run.records_path} ({cfg.executor} executor)")
    if todo:
        written, problems = _answer(cfg, spec, inputs, todo, run.records_path, config_hash)
        counts["written"] = written
        counts["problems"] += len(problems)
        counts["problem_examples"] = (inputs.problems + problems)[:20]
    counts["elapsed_s"] = round(time.time() - started, 2)
    write_manifest(run, cfg, identity, counts, started, system)
    for problem in counts["problem_examples"]:
        log.info(f"  skipped: {problem}")
    log.info(f"data-gen: wrote {counts['written']} records ({counts['problems']} problems) in {counts['elapsed_s']}s")
    return run


def _answer(cfg: DataGenConfig, spec: Any, inputs: Any, todo: list, records_path: Path,
            config_hash: str) -> tuple[int, list[str]]:
    """Answer ``todo`` with the run's one sampling (``cfg.sampling``), appending records to ``records_path``."""
    from tqdm import tqdm

    from ragroute.engines.base import create_engine
    from ragroute.rag.pipeline import RAGPipeline
    from ragroute.records import JsonlWriter

    with JsonlWriter(records_path) as writer, tqdm(total=len(todo), unit="q", desc=f"{spec.name}") as bar:
        if cfg.executor == "ray":
            from data_gen.ray_executor import answer_with_ray

            return answer_with_ray(todo, inputs.corpus, cfg, spec, cfg.sampling, writer, config_hash, bar.update)
        with create_engine(spec, cfg.engine) as engine:
            return answer_questions(
                todo, RAGPipeline(cfg.pipeline, inputs.corpus), engine, cfg.sampling, writer, cfg.batch_size,
                spec.name, config_hash, bar.update, prefetch=cfg.prefetch, attribute=cfg.attribute_citations,
            )
