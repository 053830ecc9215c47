"""Dense ANN quality and speed of ``ragroute index build``'s FAISS index vs exact search on the same vectors.

Vectors: the PubMedQA abstracts embedded with the bundled MiniLM, plus ``--docs`` synthetic distractors (each a
random real abstract's vector plus Gaussian noise of the real vectors' per-dimension spread, renormalised: they
sit in the real vectors' region of the sphere instead of being uniform noise, which ANN would find trivially
easy). They are written as embedding shards (the build's own format), the FAISS index is built by the build's
own code (``index.dense_build.build_faiss``), and queried through :class:`ragroute.rag.ann.AnnIndex` (ANN
candidates re-scored exactly from the fp16 shards). Queries are the dev questions' embeddings. Reported per
nprobe: recall@10 against exact inner-product search over all vectors, own-abstract recall@1, search p50/p99.

    .venv/bin/python bench/ann_recall.py --docs 200000 --factory IVF1024,PQ48 --nprobe 8 16 32 64
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from index.dense_build import build_faiss
from ragroute.config import shared_pubmedqa_dev
from ragroute.rag.ann import AnnIndex
from ragroute.rag.corpus import load_corpus, load_questions
from ragroute.rag.dense import DenseEncoder
from ragroute.rag.shards import EmbeddingShards, ensure_info, write_shard


class FixedQueries:
    """Stands in for the encoder: the questions' vectors, computed once up front."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return np.stack([self.vectors[q] for q in queries])


def write_corpus_shards(directory: Path, real: np.ndarray, n_docs: int, rows_per_shard: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    spread = real.std(axis=0)
    ensure_info(directory, "bench", real.shape[1], rows_per_shard)
    for k in range(-(-n_docs // rows_per_shard)):
        lo, hi = k * rows_per_shard, min((k + 1) * rows_per_shard, n_docs)
        block = np.empty((hi - lo, real.shape[1]), dtype=np.float32)
        n_real = max(0, min(hi, len(real)) - lo)
        block[:n_real] = real[lo : lo + n_real]
        base = real[rng.integers(0, len(real), size=hi - lo - n_real)]
        noisy = base + rng.standard_normal(base.shape).astype(np.float32) * spread * 1.5
        block[n_real:] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
        write_shard(directory, k, block)


def exact_top10(shards: EmbeddingShards, queries: np.ndarray) -> np.ndarray:
    best_scores = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 10), dtype=np.int64)
    for k in range(shards.n_shards):
        scores = queries @ np.asarray(shards.shard(k), dtype=np.float32).T
        ids = np.broadcast_to(np.arange(scores.shape[1]) + k * shards.rows_per_shard, scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, ids], axis=1)
        top = np.argsort(-all_scores, axis=1)[:, :10]
        best_scores, best_ids = np.take_along_axis(all_scores, top, 1), np.take_along_axis(all_ids, top, 1)
    return best_ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--factory", default="IVF1024,PQ48")
    parser.add_argument("--train-size", type=int, default=100_000)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--refine-k", type=int, default=100)
    parser.add_argument("--dataset", default=str(shared_pubmedqa_dev()))
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    docs = load_corpus(args.dataset)
    items = load_questions(args.dataset).items
    encoder = DenseEncoder(query_quantization="none")
    real = encoder.encode_documents([d.text for d in docs])
    questions = [q.question for q in items]
    query_vectors = encoder.encode_queries(questions)
    gold = [i for i, _ in enumerate(items)]  # PubMedQA: question i's abstract is document i
    work = Path(tempfile.mkdtemp(prefix="ragroute-ann-"))
    try:
        write_corpus_shards(work / "embeddings", real, args.docs, 100_000)
        shards = EmbeddingShards(work / "embeddings", args.docs)
        started = time.perf_counter()
        build_faiss(work, shards, args.factory, args.train_size)
        build_s = time.perf_counter() - started
        exact = exact_top10(shards, query_vectors)
        fixed = FixedQueries(dict(zip(questions, query_vectors, strict=True)))
        rows = []
        for nprobe in args.nprobe:
            ann = AnnIndex(work, fixed, shards, nprobe=nprobe, refine_k=args.refine_k)  # type: ignore[arg-type]
            latencies, found = [], []
            for q in questions:
                t0 = time.perf_counter()
                found.append(ann.search([q], 10)[0][0])
                latencies.append(time.perf_counter() - t0)
            rows.append({
                "nprobe": nprobe,
                "ann_recall_at_10": float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])),
                "dev_r_at_1": float(np.mean([len(f) > 0 and f[0] == g for f, g in zip(found, gold, strict=True)])),
                "p50_ms": round(float(np.median(latencies)) * 1000, 2),
                "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
            })
            print(json.dumps(rows[-1]), flush=True)
        result = {"docs": args.docs, "factory": args.factory, "refine_k": args.refine_k, "build_s": round(build_s, 1),
                  "index_mb": round((work / "dense.faiss").stat().st_size / 2**20, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "rows": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
