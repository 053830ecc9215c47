"""Retrieval benchmark: latency and recall of the configured RAG retrieval vs plain bm25s, on a PubMedQA file.

The corpus is the file's own abstracts; each question's gold document is its own abstract. Every question goes
through the full configured pipeline (retrieve ▶ rerank ▶ filter ▶ prompt) one at a time, as a served request
would; the peer, plain bm25s with its defaults, runs over the same corpus and questions in the same process.

    .venv/bin/python bench/retrieval.py \
        --config configs/pipeline/v3.1.yaml --json /tmp/retrieval.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from ragroute.config import shared_pubmedqa_dev
from ragroute.rag.corpus import load_corpus, load_questions
from ragroute.rag.pipeline import PipelineConfig, RAGPipeline, load_pipeline_config

TARGET_P50_MS = 15.0
TARGET_RECALL_AT_1 = 0.97


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


def recall(rankings: list[list[str]], gold: list[str], k: int) -> float:
    return sum(g in r[:k] for r, g in zip(rankings, gold, strict=True)) / len(gold)


def plain_bm25s(texts: list[str], questions: list[str]) -> tuple[list[list[int]], list[float]]:
    """The peer: bm25s out of the box (default tokenizer with English stop words, no stemmer), one query at a
    time including its tokenization."""
    import bm25s

    model = bm25s.BM25()
    model.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    k = min(10, len(texts))
    rankings, latencies = [], []
    for question in questions:
        started = time.perf_counter()
        docs, _ = model.retrieve(
            bm25s.tokenize([question], stopwords="en", show_progress=False), k=k, show_progress=False
        )
        latencies.append(time.perf_counter() - started)
        rankings.append([int(d) for d in docs[0]])
    return rankings, latencies


def run(dataset: str, cfg: PipelineConfig) -> dict:
    docs = load_corpus(dataset)
    items = [q for q in load_questions(dataset).items if q.gold_doc_id is not None]
    questions = [q.question for q in items]
    gold = [q.gold_doc_id for q in items]

    started = time.perf_counter()
    pipeline = RAGPipeline(cfg, docs)
    pipeline.warmup()
    ready_s = time.perf_counter() - started

    latencies, stage_times, rankings = [], {}, []
    for question in questions:
        started = time.perf_counter()
        prepared = pipeline.prepare(question)
        latencies.append(time.perf_counter() - started)
        rankings.append([d.id for d in prepared.docs])
        for stage, seconds in prepared.timings.items():
            stage_times.setdefault(stage, []).append(seconds)

    started = time.perf_counter()
    pipeline.prepare_batch(questions)
    batch_s = time.perf_counter() - started

    peer_rankings, peer_latencies = plain_bm25s([d.text for d in docs], questions)
    peer_ids = [[docs[i].id for i in r] for r in peer_rankings]
    p50 = percentile_ms(latencies, 50)
    peer_p50 = percentile_ms(peer_latencies, 50)
    return {
        "n_questions": len(questions),
        "n_docs": len(docs),
        "p50_ms": round(p50, 3),
        "p95_ms": round(percentile_ms(latencies, 95), 3),
        "recall_at_1": recall(rankings, gold, 1),
        "recall_at_10": recall(rankings, gold, 10),
        "bm25_only_recall_at_1": recall(peer_ids, gold, 1),
        "bm25_only_recall_at_10": recall(peer_ids, gold, 10),
        "bm25_only_p50_ms": round(peer_p50, 3),
        "stage_p50_ms": {s: round(statistics.median(t) * 1000, 3) for s, t in stage_times.items()},
        "batch_ms_per_question": round(batch_s / len(questions) * 1000, 3),
        "startup_s": round(ready_s, 2),
        "targets": {"p50_ms": TARGET_P50_MS, "recall_at_1": TARGET_RECALL_AT_1},
        "meets_targets": p50 <= TARGET_P50_MS and recall(rankings, gold, 1) >= TARGET_RECALL_AT_1,
        "config": {k: v for k, v in vars(cfg).items() if k not in ("instruction", "template")},
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", default=str(shared_pubmedqa_dev()), help="PubMedQA-format json (default: the bundled dev set)"
    )
    parser.add_argument("--config", help="pipeline YAML (default: PipelineConfig defaults)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    cfg = load_pipeline_config(args.config, args.set)
    result = run(args.dataset, cfg)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
