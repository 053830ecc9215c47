"""The answering loop: pipeline → engine → one durable record per question."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ragroute.engines.base import GenerationEngine, GenerationRequest, GenerationResult, SamplingConfig
from ragroute.rag.corpus import QAItem
from ragroute.records import AnswerRecord, JsonlWriter


@dataclass(frozen=True)
class RecordStamp:
    """What every record of one run carries besides its question and answer."""

    model_name: str
    config_hash: str
    attribute: bool = False  # also write the answer with a citation on every sentence (``cited_answer``)


def build_record(
    item: QAItem, prepared: Any, result: GenerationResult, stamp: RecordStamp, generation_share: float | None = None
) -> AnswerRecord:
    """One record; with ``stamp.attribute`` also the answer with a citation on every sentence (``cited_answer``),
    the model's own markers where it wrote them, else attributed (:mod:`ragroute.attribution`)."""
    timings = dict(prepared.timings)
    timings.update(result.timings)  # verdict-first answers: the verdict and explanation steps
    timings["generation"] = result.total_s
    if generation_share is not None:
        # This question's equal share of its batch's generation wall time: summed with the (equally shared)
        # pipeline stages over a run, it gives the batched throughput; ``generation`` is the request's latency.
        timings["generation_share"] = generation_share
    if result.ttft_s is not None:
        timings["ttft"] = result.ttft_s
    top = None
    if result.logprobs is not None:
        top = [[[int(tok), float(lp)] for tok, lp in sorted(step.items(), key=lambda kv: -kv[1])] for step in result.logprobs]
    cited_answer, citation_source = None, None
    if stamp.attribute:
        from ragroute.attribution import attribute as attribute_citations

        cited_answer, citation_source = attribute_citations(result.text, [d.text for d in prepared.docs])
    return AnswerRecord(
        id=item.id,
        question=item.question,
        answer=result.text,
        model=stamp.model_name,
        prompt=prepared.messages[-1]["content"],
        messages=prepared.messages,
        doc_ids=[d.id for d in prepared.docs],
        doc_scores=[float(d.score) for d in prepared.docs],
        doc_titles=[d.title for d in prepared.docs],
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason,
        timings=timings,
        config_hash=stamp.config_hash,
        gold_answer=item.gold_answer,
        gold_decision=item.gold_decision,
        gold_doc_id=item.gold_doc_id,
        answer_token_ids=result.token_ids if top is not None else None,
        top_logprobs=top,
        shape_only=result.shape_only,
        verdict=result.verdict,
        verdict_probs=result.verdict_probs,
        cited_answer=cited_answer,
        citation_source=citation_source,
    )


def _batches(items: list[QAItem], size: int) -> Iterable[list[QAItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_isolated(
    engine: GenerationEngine, requests: list[GenerationRequest], sampling: SamplingConfig
) -> list[GenerationResult | str]:
    """One result per request, in order; a string is the error of a request the engine failed on. One bad
    question never sinks a batch: if the engine rejects the batch, its requests are retried one by one. Raises
    when every request fails (the engine itself is broken)."""
    try:
        return list(engine.generate(requests, sampling))
    except Exception as batch_error:  # noqa: BLE001 - isolate the failing question below
        results: list[GenerationResult | str] = []
        for request in requests:
            try:
                results.extend(engine.generate([request], sampling))
            except Exception as exc:  # noqa: BLE001
                results.append(f"generation failed: {type(exc).__name__}: {exc}")
        if all(isinstance(r, str) for r in results):
            raise batch_error
        return results


def write_results(
    answered: Iterable[tuple[QAItem, Any, GenerationResult | str]],
    writer: JsonlWriter,
    stamp: RecordStamp,
    problems: list[str],
    generation_share: float | None = None,
) -> int:
    """Append one record per answered (question, prepared prompt, result), the batch made durable at once (one
    fsync); a result that is a string is a failed question and goes to ``problems``. Returns the number of
    records written. ``generation_share`` is each question's share of its batch's wall time, where the caller
    timed the batch."""
    records = []
    for item, prep, result in answered:
        if isinstance(result, str):
            problems.append(f"question {item.id}: {result}")
            continue
        records.append(build_record(item, prep, result, stamp, generation_share))
    writer.write_many(records)
    return len(records)


def answer_questions(
    items: list[QAItem],
    pipeline: Any,
    engine: GenerationEngine,
    sampling: SamplingConfig,
    writer: JsonlWriter,
    batch_size: int,
    model_name: str,
    config_hash: str,
    on_done: Callable[[int], None] = lambda n: None,
    prefetch: bool = True,
    attribute: bool = False,
) -> tuple[int, list[str]]:
    """Answer ``items`` in batches in this process; returns (records written, problems). With ``prefetch`` the
    next batch's retrieval and prompts are built in a worker thread while the engine answers this one (the
    engine's own processes do the GPU work, so the CPU-side pipeline no longer adds to the wall time); records
    are the same either way and are still written batch by batch, in order."""
    from concurrent.futures import ThreadPoolExecutor

    written, problems = 0, []
    batches = list(_batches(items, batch_size))
    stamp = RecordStamp(model_name, config_hash, attribute)

    def prepare(batch: list[QAItem]) -> list[Any]:
        return pipeline.prepare_batch([item.question for item in batch])

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-gen-prepare") as pool:
        upcoming = pool.submit(prepare, batches[0]) if batches and prefetch else None
        for i, batch in enumerate(batches):
            prepared = upcoming.result() if upcoming is not None else prepare(batch)
            upcoming = pool.submit(prepare, batches[i + 1]) if prefetch and i + 1 < len(batches) else None
            requests = [GenerationRequest(messages=p.messages) for p in prepared]
            started = time.perf_counter()
            results = generate_isolated(engine, requests, sampling)
            share = (time.perf_counter() - started) / len(batch)
            written += write_results(zip(batch, prepared, results, strict=True), writer, stamp, problems, share)
            on_done(len(batch))
    return written, problems
