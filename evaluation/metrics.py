"""Quality and latency of one system's answers, with bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evaluation.latency import SingleStream, batch_q_per_min
from ragroute.attribution import ATTRIBUTED
from ragroute.quality import citation_validity, extract_decision, own_doc_cited, rouge_l
from ragroute.records import AnswerRecord

DECISIONS = ("yes", "no", "maybe")
STAGES = ("retrieval", "rerank", "filter", "prompt", "router", "generation")


def macro_f1(gold: Sequence[str], predicted: Sequence[str | None]) -> float:
    """Macro-F1 over yes/no/maybe; an answer with no extractable decision counts as wrong for every class."""
    from sklearn.metrics import f1_score

    if not gold:
        return float("nan")
    pred = [p if p is not None else "none" for p in predicted]
    return float(f1_score(list(gold), pred, labels=list(DECISIONS), average="macro", zero_division=0))


def bootstrap_ci(
    values: Sequence[Any], statistic: Callable[[list[Any]], float], n: int, seed: int
) -> list[float] | None:
    """95% percentile interval of ``statistic`` over ``n`` resamples of ``values`` (None with < 2 values)."""
    if n <= 0 or len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    items = list(values)
    stats = [statistic([items[i] for i in rng.integers(0, len(items), len(items))]) for _ in range(n)]
    low, high = np.nanpercentile(stats, [2.5, 97.5])
    return [float(low), float(high)]


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def latency_metrics(single: SingleStream | None) -> dict[str, Any]:
    """Per-question latency figures from the single-stream measurement (all None without one)."""
    rows = list(single.timings.values()) if single else []

    def stage(name: str) -> list[float]:
        return [t[name] for t in rows if name in t]

    generation = stage("generation")
    out_tokens = sum(single.tokens.values()) if single else 0
    return {
        "latency_n": len(rows),
        "gen_latency_p50_s": _pct(generation, 50),
        "gen_latency_p95_s": _pct(generation, 95),
        "total_latency_p50_s": _pct([sum(t.get(s, 0.0) for s in STAGES) for t in rows], 50),
        "total_latency_p95_s": _pct([sum(t.get(s, 0.0) for s in STAGES) for t in rows], 95),
        "ttft_p50_s": _pct(stage("ttft"), 50),
        "output_tokens_per_s": out_tokens / sum(generation) if generation and sum(generation) > 0 else None,
        "stages": {s: {"p50_s": _pct(stage(s), 50), "p95_s": _pct(stage(s), 95)} for s in STAGES if stage(s)},
    }


def system_metrics(
    records: list[AnswerRecord], teacher_flags: list[bool], bootstrap: int = 1000, seed: int = 0,
    single: SingleStream | None = None,
) -> dict[str, Any]:
    """Everything the report shows for one system. ``teacher_flags[i]``: record i was answered by the teacher.
    Quality and ``batch_q_per_min`` come from ``records`` (answered in batches); latencies from ``single``.
    Answers of shape-only models (random weights) have real timings and no quality: every quality figure is None."""
    shape_only = any(r.shape_only for r in records)
    judged = [] if shape_only else records
    decided = [(r.gold_decision, extract_decision(r.answer)) for r in judged if r.gold_decision in DECISIONS]
    with_gold_answer = [(r.answer, r.gold_answer) for r in judged if r.gold_answer]
    rouge = [rouge_l(answer, gold) for answer, gold in with_gold_answer]
    # Only the model's own [i] markers (in ``answer``) count; attributed ones (``cited_answer``) are counted apart.
    cited = [citation_validity(r.answer, len(r.doc_ids)) for r in judged]
    # What users get back: data_gen's cited_answer (own markers, else attributed ones); the answer where none.
    returned = [citation_validity(r.cited_answer or r.answer, len(r.doc_ids)) for r in judged]

    def accuracy(pairs: list[tuple[str, str | None]]) -> float:
        return float(np.mean([g == p for g, p in pairs])) if pairs else float("nan")

    def f1(pairs: list[tuple[str, str | None]]) -> float:
        return macro_f1([g for g, _ in pairs], [p for _, p in pairs])

    metrics: dict[str, Any] = {
        "n": len(records),
        "accuracy": accuracy(decided) if decided else None,
        "macro_f1": f1(decided) if decided else None,
        "rouge_l": float(np.mean(rouge)) if rouge else None,
        "citation_valid": float(np.mean([c.has_citation and c.valid_fraction == 1.0 for c in cited])) if cited else None,
        "cited_answer_valid": float(np.mean([c.has_citation and c.valid_fraction == 1.0 for c in returned]))
        if returned else None,
        "has_citation": float(np.mean([c.has_citation for c in cited])) if cited else None,
        "own_abstract_cited": float(np.mean([own_doc_cited(r.answer, r.doc_ids, r.gold_doc_id) for r in judged]))
        if any(r.gold_doc_id for r in judged) else None,
        "shape_only": shape_only,
        "citations_attributed": float(np.mean([r.citation_source == ATTRIBUTED for r in judged])) if judged else None,
        "verdict_present": float(np.mean([extract_decision(r.answer) is not None for r in judged])) if judged else None,
        "answer_tokens_mean": float(np.mean([r.completion_tokens for r in records])) if records else None,
        **latency_metrics(single),
        "batch_q_per_min": batch_q_per_min(records, STAGES),
        "teacher_share": float(np.mean(teacher_flags)) if teacher_flags else None,
        "ci95": {
            "accuracy": bootstrap_ci(decided, accuracy, bootstrap, seed),
            "macro_f1": bootstrap_ci(decided, f1, bootstrap, seed),
            "rouge_l": bootstrap_ci(rouge, lambda v: float(np.mean(v)), bootstrap, seed),
        },
    }
    return metrics


def estimated_generation_s(records: list[AnswerRecord], single: SingleStream | None) -> np.ndarray | None:
    """Each record's single-stream generation time, estimated from its answer length and the sample's medians
    (time to first token, then time per further token); None without a single-stream sample."""
    rows = [(t, single.tokens[i]) for i, t in single.timings.items() if single.tokens.get(i)] if single else []
    if not rows:
        return None
    ttft = [t["ttft"] for t, _ in rows if "ttft" in t]
    first = float(np.median(ttft)) if len(ttft) == len(rows) else 0.0
    per_token = float(np.median([(t["generation"] - t.get("ttft", 0.0)) / max(n - (1 if first else 0), 1)
                                 for t, n in rows]))
    return np.array([first + per_token * r.completion_tokens for r in records])
