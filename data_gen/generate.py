"""The answering loop: pipeline → engine → one durable record per question."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ragroute.engines.base import GenerationEngine, GenerationRequest, GenerationResult, SamplingConfig
from ragroute.rag.corpus import QAItem
from ragroute.records import AnswerRecord, JsonlWriter


@dataclass
class Generated:
    """One model answer: the engine result, and for verdict-first answers the verdict, its probabilities and
    the seconds of each step."""

    result: GenerationResult
    verdict: str | None = None
    verdict_probs: dict[str, float] | None = None
    timings: dict[str, float] = field(default_factory=dict)


Answerer = Callable[[list[list[dict[str, str]]]], list[Generated]]


def make_answerer(engine: GenerationEngine, sampling: SamplingConfig, verdicts: Any = None) -> Answerer:
    """Chat messages -> answers: plain generation, or verdict-first through a :class:`ragroute.verdict.VerdictGenerator`."""
    if verdicts is None:
        return lambda batch: [Generated(r) for r in engine.generate([GenerationRequest(messages=m) for m in batch], sampling)]

    def verdict_first(batch: list[list[dict[str, str]]]) -> list[Generated]:
        return [Generated(a.result, a.verdict, a.probs, a.timings) for a in verdicts.answer(batch, sampling)]

    return verdict_first


def build_record(
    item: QAItem, prepared: Any, generated: Generated, model_name: str, config_hash: str, attribute: bool = True
) -> AnswerRecord:
    from ragroute.attribution import attribute as attribute_citations

    result = generated.result
    timings = dict(prepared.timings)
    timings.update(generated.timings)
    timings["generation"] = result.total_s
    if result.ttft_s is not None:
        timings["ttft"] = result.ttft_s
    top = None
    if result.logprobs is not None:
        top = [[[int(tok), float(lp)] for tok, lp in sorted(step.items(), key=lambda kv: -kv[1])] for step in result.logprobs]
    answer, citation_source = result.text, None
    if attribute:
        answer, citation_source = attribute_citations(result.text, [d.text for d in prepared.docs])
    return AnswerRecord(
        id=item.id,
        question=item.question,
        answer=answer,
        model=model_name,
        prompt=prepared.messages[-1]["content"],
        messages=prepared.messages,
        doc_ids=[d.id for d in prepared.docs],
        doc_scores=[float(d.score) for d in prepared.docs],
        doc_titles=[d.title for d in prepared.docs],
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason,
        timings=timings,
        config_hash=config_hash,
        gold_answer=item.gold_answer,
        gold_decision=item.gold_decision,
        gold_doc_id=item.gold_doc_id,
        answer_token_ids=result.token_ids if top is not None else None,
        top_logprobs=top,
        shape_only=result.shape_only,
        verdict=generated.verdict,
        verdict_probs=generated.verdict_probs,
        citation_source=citation_source,
    )


def _batches(items: list[QAItem], size: int) -> Iterable[list[QAItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def answer_questions(
    items: list[QAItem],
    pipeline: Any,
    answerer: Answerer,
    writer: JsonlWriter,
    batch_size: int,
    model_name: str,
    config_hash: str,
    on_done: Callable[[int], None] = lambda n: None,
    attribute: bool = True,
) -> tuple[int, list[str]]:
    """Answer ``items`` in batches; returns (records written, problems). One bad question never sinks a batch:
    if the engine rejects a batch, its questions are retried one by one and the failures are reported."""
    written, problems = 0, []
    for batch in _batches(items, batch_size):
        prepared = pipeline.prepare_batch([item.question for item in batch])
        requests = [p.messages for p in prepared]
        try:
            results: list[Generated | None] = list(answerer(requests))
        except Exception as batch_error:  # noqa: BLE001 - isolate the failing question below
            results = []
            for item, request in zip(batch, requests, strict=True):
                try:
                    results.extend(answerer([request]))
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"question {item.id}: generation failed: {type(exc).__name__}: {exc}")
                    results.append(None)
            if all(r is None for r in results):
                raise batch_error
        for item, prep, result in zip(batch, prepared, results, strict=True):
            if result is None:
                continue
            writer.write(build_record(item, prep, result, model_name, config_hash, attribute))
            written += 1
        on_done(len(batch))
    return written, problems
