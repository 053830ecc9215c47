"""data_gen entry point: ``main(cfg)`` runs one (shard of a) dataset generation, resumably."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from data_gen.config import DataGenConfig
from data_gen.generate import answer_questions
from data_gen.inputs import load_inputs, select_shard
from data_gen.manifest import check_resumable, output_identity, run_system, write_manifest
from ragroute.errors import UserError

log = logging.getLogger("ragroute.data_gen")


def shard_paths(out: Path, index: int, count: int) -> tuple[Path, Path]:
    if count == 1:
        return out / "records.jsonl", out / "manifest.json"
    suffix = f"shard-{index}-of-{count}"
    return out / f"records.{suffix}.jsonl", out / f"manifest.{suffix}.json"


def main(cfg: DataGenConfig) -> dict:
    import hashlib
    import json

    from tqdm import tqdm

    from ragroute.engines.base import create_engine
    from ragroute.models import load_model_spec
    from ragroute.rag.pipeline import RAGPipeline
    from ragroute.records import JsonlWriter, finished_ids

    if not cfg.out:
        raise UserError("no output directory given (--out DIR)")
    if cfg.executor == "local" and cfg.engine.data_parallel_size > 1:
        from data_gen.parallel import run_data_parallel

        return run_data_parallel(cfg)
    if cfg.executor == "ray":
        from data_gen.ray_executor import require_ray

        require_ray()
    started = time.time()
    spec = load_model_spec(cfg.model_config)
    inputs = load_inputs(cfg.questions, cfg.corpus or cfg.pipeline.corpus)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    records_path, manifest_path = shard_paths(out, cfg.shard_index, cfg.shard_count)
    identity = output_identity(cfg, spec)
    system = run_system(cfg, spec)
    config_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    if not check_resumable(manifest_path, config_hash, cfg.overwrite):
        records_path.unlink(missing_ok=True)
    done = finished_ids(records_path)
    mine = select_shard(inputs.questions, cfg.shard_index, cfg.shard_count, cfg.limit)
    todo = [q for q in mine if q.id not in done]
    counts = {"questions": len(mine), "already_done": len(mine) - len(todo), "written": 0,
              "problems": len(inputs.problems), "problem_examples": inputs.problems[:20]}
    write_manifest(manifest_path, cfg, identity, config_hash, counts, started, system)
    log.info(f"data-gen: {len(mine)} questions for shard {cfg.shard}, {counts['already_done']} already done, "
          f"{len(inputs.problems)} input problems skipped; writing {records_path} ({cfg.executor} executor)")
    if todo:
        sampling = cfg.sampling
        if cfg.top_logprobs:
            sampling.logprobs = cfg.top_logprobs
        with JsonlWriter(records_path) as writer, tqdm(total=len(todo), unit="q", desc=f"{spec.name}") as bar:
            if cfg.executor == "ray":
                from data_gen.ray_executor import answer_with_ray

                written, problems = answer_with_ray(
                    todo, inputs.corpus, cfg, spec, sampling, writer, config_hash, bar.update
                )
            else:
                with create_engine(spec, cfg.engine) as engine:
                    written, problems = answer_questions(
                        todo, RAGPipeline(cfg.pipeline, inputs.corpus), engine, sampling, writer, cfg.batch_size,
                        spec.name, config_hash, bar.update, prefetch=cfg.prefetch,
                        attribute=cfg.attribute_citations,
                    )
        counts["written"] = written
        counts["problems"] += len(problems)
        counts["problem_examples"] = (inputs.problems + problems)[:20]
    counts["elapsed_s"] = round(time.time() - started, 2)
    write_manifest(manifest_path, cfg, identity, config_hash, counts, started, system)
    for problem in counts["problem_examples"]:
        log.info(f"  skipped: {problem}")
    log.info(f"data-gen: wrote {counts['written']} records ({counts['problems']} problems) in {counts['elapsed_s']}s")
    return counts
