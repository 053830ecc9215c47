"""Sparse engines compared: bm25s (today's in-memory index) vs tantivy (``ragroute index build``'s on-disk one).

1. Quality on PubMedQA: recall@1/@10 of each question's own abstract among the dataset's abstracts, both engines
   with the same analysis (token pattern, lower-case, English stop words, Snowball stems).
2. Build at scale (tantivy): ``--docs N`` synthetic documents (words drawn from the real abstracts' word
   frequencies, lengths from the real lengths, generated in batches so the generator holds one batch), streamed
   into tantivy with the build's writer heap; peak RSS of the process, build seconds, index size on disk and
   single-question p50 over the dev questions. bm25s' build at the same size: ``bench/retrieval_scale.py``.

    .venv/bin/python bench/sparse_engines.py --docs 1000000 --json /tmp/sparse-1m.json
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from index.sparse_build import add_documents
from ragroute.config import shared_pubmedqa_dev
from ragroute.rag.bm25 import BM25Index, BM25Settings
from ragroute.rag.corpus import load_corpus, load_questions
from ragroute.rag.sparse import AnalyzerSettings, TantivyBM25

WORD = re.compile(r"\w\w+")


def recall(found: list[np.ndarray], gold: list[int]) -> dict[str, float]:
    at1 = sum(len(f) > 0 and int(f[0]) == g for f, g in zip(found, gold, strict=True))
    at10 = sum(g in set(f[:10].tolist()) for f, g in zip(found, gold, strict=True))
    return {"recall_at_1": at1 / len(gold), "recall_at_10": at10 / len(gold)}


def quality(dataset: str, workdir: Path) -> dict[str, dict[str, float]]:
    docs = load_corpus(dataset)
    questions = load_questions(dataset).items
    position = {d.id: i for i, d in enumerate(docs)}
    gold = [position[q.gold_doc_id] for q in questions]
    texts = [q.question for q in questions]
    bm25 = BM25Index.build([d.text for d in docs], BM25Settings())
    add_documents(workdir / "q", AnalyzerSettings(), [(0, [d.id for d in docs], [d.text for d in docs])])
    tantivy = TantivyBM25(workdir / "q", AnalyzerSettings())
    return {
        "bm25s": recall([f for f, _ in bm25.search(texts, 10)], gold),
        "tantivy": recall([f for f, _ in tantivy.search(texts, 10)], gold),
    }


def synthetic_batches(dataset: str, n_docs: int, batch: int = 10_000, seed: int = 0):
    docs = load_corpus(dataset)
    words = [WORD.findall(d.text) for d in docs]
    counts = Counter(w for ws in words for w in ws)
    vocab = np.array(list(counts))
    cdf = np.cumsum(np.array([counts[w] for w in vocab], dtype=np.float64))
    cdf /= cdf[-1]
    lengths = np.array([len(ws) for ws in words])
    rng = np.random.default_rng(seed)
    yield 0, [d.id for d in docs], [d.text for d in docs]
    for first in range(len(docs), n_docs, batch):
        n = min(batch, n_docs - first)
        sizes = rng.choice(lengths, size=n)
        drawn = vocab[np.searchsorted(cdf, rng.random(int(sizes.sum())), side="right").clip(max=len(vocab) - 1)]
        cuts = np.cumsum(sizes)[:-1]
        yield first, [str(first + i) for i in range(n)], [" ".join(p) for p in np.split(drawn, cuts)]


def build_at_scale(dataset: str, n_docs: int, workdir: Path, heap_mb: int) -> dict:
    started = time.perf_counter()
    add_documents(workdir / "scale", AnalyzerSettings(), synthetic_batches(dataset, n_docs), heap_mb=heap_mb)
    build_s = time.perf_counter() - started
    disk = sum(f.stat().st_size for f in (workdir / "scale").rglob("*") if f.is_file())
    index = TantivyBM25(workdir / "scale", AnalyzerSettings())
    questions = load_questions(dataset).items
    index.search([questions[0].question], 20)
    latencies, hits = [], 0
    for i, q in enumerate(questions):
        t0 = time.perf_counter()
        found, _ = index.search_one(q.question, 20)
        latencies.append(time.perf_counter() - t0)
        hits += len(found) > 0 and int(found[0]) == i  # the real abstracts are positions 0..499, in order
    return {
        "docs": n_docs, "build_s": round(build_s, 1), "heap_mb": heap_mb,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "index_disk_mb": round(disk / 2**20, 1), "p50_ms": round(float(np.median(latencies)) * 1000, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2), "recall_at_1": hits / len(questions),
    }


def latency_vs_bm25s(dataset: str, n_docs: int, workdir: Path) -> dict:
    """Both engines over the same ``n_docs`` synthetic texts (held in memory: keep n_docs modest), the dev
    questions timed one at a time, alternating engines question by question so both see the same machine load."""
    texts = [t for _, _, batch in synthetic_batches(dataset, n_docs) for t in batch]
    add_documents(workdir / "cmp", AnalyzerSettings(), [(0, [], texts)])
    tantivy = TantivyBM25(workdir / "cmp", AnalyzerSettings())
    bm25 = BM25Index.build(texts, BM25Settings())
    del texts
    questions = [q.question for q in load_questions(dataset).items]
    times: dict[str, list[float]] = {"bm25s": [], "tantivy": []}
    for engine in (bm25, tantivy):
        engine.search(questions[:1], 20)  # JIT / page-in before timing
    for q in questions:
        for name, engine in (("bm25s", bm25), ("tantivy", tantivy)):
            t0 = time.perf_counter()
            engine.search([q], 20)
            times[name].append(time.perf_counter() - t0)
    return {"docs": n_docs, **{f"{name}_p50_ms": round(float(np.median(t)) * 1000, 2) for name, t in times.items()},
            **{f"{name}_p99_ms": round(float(np.percentile(t, 99)) * 1000, 2) for name, t in times.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=0, help="synthetic corpus size for the build (0: skip)")
    parser.add_argument("--heap-mb", type=int, default=256, help="tantivy writer heap")
    parser.add_argument("--latency-docs", type=int, default=0, help="query latency of both engines at this size")
    parser.add_argument("--dataset", default=str(shared_pubmedqa_dev()), help="PubMedQA-format json")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ragroute-sparse-"))
    try:
        result = {"quality": quality(args.dataset, workdir)}
        if args.latency_docs:
            result["latency"] = latency_vs_bm25s(args.dataset, args.latency_docs, workdir)
        if args.docs:
            result["build"] = build_at_scale(args.dataset, args.docs, workdir, args.heap_mb)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
