"""Single-stream latency: what one user waits for one question, measured apart from the batched answering.

The answers that eval scores are generated in batches (data_gen), so each question's recorded generation time
is its batch's time, and throughput (questions per minute) is the honest figure for them. Per-question
latency is measured here instead: a sample of the questions goes through the RAG pipeline and the engine one
at a time (batch 1, after a warm-up question), as a served request would. Results are cached under the
evaluation's output directory, keyed by everything that affects them, so a rerun reuses them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.records import AnswerRecord

log = logging.getLogger("ragroute.evaluation")

WARMUP_QUESTION = "Is a warm-up question about clinical outcomes answered before the timed ones?"


@dataclass
class Setup:
    """One system's way of answering with a model: its pipeline settings and decoding."""

    pipeline: Any  # ragroute.rag.pipeline.PipelineConfig
    sampling: Any  # ragroute.engines.base.SamplingConfig


@dataclass
class SingleStream:
    """Per-question timings (seconds per stage, as in records) of one system answering one question at a time."""

    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)  # answer tokens per question

    def routed(self, other: SingleStream, use_self: dict[str, bool], router_s: dict[str, float],
               escalated_after: dict[str, float] | None = None) -> SingleStream:
        """The routed system: per question, this system's or ``other``'s answer plus the router's decision.
        ``escalated_after`` (the cascade): seconds ``other`` spent before handing a question to this system,
        added to its generation."""
        routed = SingleStream()
        for qid in self.timings:
            chosen = self if use_self[qid] else other
            timings = {**chosen.timings[qid], "router": router_s[qid]}
            if use_self[qid] and escalated_after:
                timings["escalation_waste"] = escalated_after.get(qid, 0.0)
                timings["generation"] += timings["escalation_waste"]
            routed.timings[qid] = timings
            routed.tokens[qid] = chosen.tokens[qid]
        return routed


def sample_ids(ids: Sequence[str], size: int, seed: int) -> list[str]:
    """``size`` ids drawn without replacement (seeded), in their original order."""
    import numpy as np

    if size >= len(ids):
        return list(ids)
    picked = np.random.default_rng(seed).choice(len(ids), size=size, replace=False)
    return [ids[i] for i in sorted(picked)]


def _identity(model: Any, engine: Any, setup: Setup, ids: list[str]) -> str:
    from ragroute.artifacts import content_hash
    from ragroute.config import config_to_dict

    payload = {"model": config_to_dict(model), "engine": config_to_dict(engine), "ids": ids,
               "pipeline": config_to_dict(setup.pipeline), "sampling": config_to_dict(setup.sampling)}
    return content_hash(payload, length=16)


def _answer_one_by_one(pipeline: Any, engine: Any, questions: list[tuple[str, str]], sampling: Any) -> SingleStream:
    from ragroute.engines.base import GenerationRequest

    pipeline.warmup()
    engine.generate([GenerationRequest(messages=pipeline.prepare(WARMUP_QUESTION).messages)], sampling)
    measured = SingleStream()
    for qid, question in questions:
        prepared = pipeline.prepare(question)
        result = engine.generate([GenerationRequest(messages=prepared.messages)], sampling)[0]
        timings = {**prepared.timings, "generation": result.total_s}
        if result.ttft_s is not None:
            timings["ttft"] = result.ttft_s
        if "verdict" in (result.timings or {}):  # verdict-first: the step a cascade escalates after
            timings["verdict"] = result.timings["verdict"]
        measured.timings[qid] = timings
        measured.tokens[qid] = result.completion_tokens
    return measured


def measure_single_stream(
    model_config: str, cfg: Any, questions: list[tuple[str, str]], corpus: list[Any], setups: dict[str, Setup],
    cache_dir: Path,
) -> dict[str, SingleStream]:
    """Answer ``questions`` (id, text) one at a time with one model under each named setup; the engine is loaded
    once for all setups, and not at all when every setup's result is cached."""
    from ragroute.artifacts import write_json_atomic
    from ragroute.engines.base import create_engine
    from ragroute.models import load_model_spec
    from ragroute.rag.pipeline import RAGPipeline

    spec = load_model_spec(model_config)
    ids = [qid for qid, _ in questions]
    results: dict[str, SingleStream] = {}
    paths = {name: cache_dir / f"{name}.json" for name in setups}
    keys = {name: _identity(spec, cfg.engine, setup, ids) for name, setup in setups.items()}
    for name, path in paths.items():
        saved = json.loads(path.read_text()) if path.exists() else {}
        if saved.get("identity") == keys[name]:
            results[name] = SingleStream(saved["timings"], saved["tokens"])
    todo = [name for name in setups if name not in results]
    if not todo:
        return results
    cache_dir.mkdir(parents=True, exist_ok=True)
    with create_engine(spec, cfg.engine) as engine:
        for name in todo:
            started = time.perf_counter()
            pipeline = RAGPipeline(setups[name].pipeline, corpus)
            results[name] = _answer_one_by_one(pipeline, engine, questions, setups[name].sampling)
            saved = {"identity": keys[name], "timings": results[name].timings, "tokens": results[name].tokens}
            write_json_atomic(paths[name], saved)
            log.info("single-stream %s: %d questions in %.1f s", name, len(questions), time.perf_counter() - started)
    return results


def batch_q_per_min(records: list[AnswerRecord], stages: Sequence[str]) -> float | None:
    """Throughput of the batched run that produced ``records``: questions per minute of the pipeline stages'
    and the generation's shares of their batches (data_gen records ``generation_share``; None without it)."""
    if not records or any("generation_share" not in r.timings for r in records):
        return None
    seconds = sum(r.timings["generation_share"] + sum(r.timings.get(s, 0.0) for s in stages if s != "generation")
                  for r in records)
    return 60.0 * len(records) / seconds if seconds > 0 else None
