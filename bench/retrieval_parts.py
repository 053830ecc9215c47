"""Where a question's time goes over a built store + index: the sparse part (tantivy BM25 top k, or with reranker
bm25-rrf the BM25 scores of the dense top k only), the query encoding, the dense part (encoding + FAISS + exact
refine) and the whole pipeline, each timed one question at a
time in one process (p50 / p99 ms); and the pipeline's recall@1/@10 of each question's own abstract.

    PYTHONPATH=. python bench/retrieval_parts.py --store /tmp/scale/run/store --index /tmp/scale/run/index
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np


def percentiles(run: Callable[[str], object], questions: list[str]) -> dict[str, float]:
    times = []
    for q in questions:
        started = time.perf_counter()
        run(q)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--config", default="configs/pipeline/pubmed.yaml")
    parser.add_argument("--dataset", default="ragroute/data/pubmedqa/pqal_dev.json")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--k", type=int, default=50, help="candidates asked from each part (retrieval_n)")
    args = parser.parse_args()

    from ragroute.rag.corpus import load_questions
    from ragroute.rag.pipeline import RAGPipeline, load_pipeline_config

    cfg = load_pipeline_config(args.config, [f"corpus={args.store}", f"index={args.index}"])
    pipeline = RAGPipeline.from_config(cfg)
    pipeline.warmup()
    items = load_questions(args.dataset).items[: args.limit]
    questions = [q.question for q in items]
    result: dict[str, object] = {"config": args.config, "questions": len(questions)}
    if cfg.retriever in ("bm25", "hybrid"):
        sparse = pipeline.store.bm25()
        result["sparse_top_k"] = percentiles(lambda q: sparse.search([q], args.k), questions)
    if cfg.retriever in ("dense", "hybrid"):
        dense = pipeline.store.dense()
        result["query_encoding"] = percentiles(lambda q: dense.encoder.encode_queries([q]), questions)
        result["dense_top_k"] = percentiles(lambda q: dense.search([q], args.k), questions)
    if cfg.reranker == "bm25-rrf":
        sparse = pipeline.store.bm25()
        top = {q: dense.search([q], args.k)[0][0] for q in questions}
        result["sparse_candidate_scores"] = percentiles(lambda q: sparse.candidate_scores(q, top[q]), questions)
    prepared: dict[str, list[str]] = {}  # question -> its documents' ids, from the timed run itself
    result["pipeline"] = percentiles(lambda q: prepared.setdefault(q, [d.id for d in pipeline.prepare(q).docs]),
                                     questions)
    ranks = []
    for item in items:
        ids = prepared[item.question]
        ranks.append(ids.index(item.gold_doc_id) if item.gold_doc_id in ids else None)
    result["dev_r_at_1"] = sum(r == 0 for r in ranks) / len(ranks)
    result["dev_r_at_10"] = sum(r is not None and r < 10 for r in ranks) / len(ranks)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
