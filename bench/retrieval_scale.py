"""BM25 stage at scale: query latency of the pipeline's bm25s index over 10k-1M documents, vs rank-bm25.

The corpus is the PubMedQA abstracts plus synthetic documents drawn from their vocabulary's frequency
distribution (terms after the pipeline's own tokenization: lower-case, stop words removed, Snowball stems) with
lengths drawn from the real abstracts' lengths. Synthetic documents are generated as term ids, not text, so a
million of them take seconds to make; the queries are the real PubMedQA questions, tokenized by the same code
path the pipeline uses. The index is saved, then loaded memory-mapped, as the pipeline does.

Each query runs alone (tokenize + score + top-k), as a served request would. rank-bm25 (BM25Okapi, the usual
pure-Python BM25) runs in the same process over the same tokens up to 100k documents; above that its index
alone would take tens of GB and minutes per query batch, so it is reported as null.

    .venv/bin/python bench/retrieval_scale.py --docs 100000 --json /tmp/scale-100k.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ragroute.config import shared_pubmedqa_dev
from ragroute.rag.bm25 import BM25Index, BM25Settings, make_stemmer
from ragroute.rag.corpus import load_corpus, load_questions

DEFAULT_DATASET = shared_pubmedqa_dev()
RANK_BM25_MAX_DOCS = 100_000
TARGET_P50_MS_AT_1M = 20.0
TARGET_SPEEDUP_AT_100K = 50.0


class TokenIdDocs(Sequence):
    """Documents as lists of term ids, backed by one flat int32 array (a million Python lists of ints would
    take gigabytes; bm25s only needs to iterate over the documents)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat = flat
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(len(self)):
            yield self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()


def synthetic_corpus(real_ids: list[list[int]], vocab_size: int, n_docs: int, seed: int = 0) -> TokenIdDocs:
    """The real documents first, then ``n_docs - len(real_ids)`` synthetic ones from the real term frequencies."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(
        np.concatenate([np.asarray(d, dtype=np.int64) for d in real_ids]), minlength=vocab_size
    )
    probabilities = counts / counts.sum()
    real_lengths = np.array([len(d) for d in real_ids])
    n_synthetic = max(0, n_docs - len(real_ids))
    lengths = np.concatenate([real_lengths, rng.choice(real_lengths, size=n_synthetic)])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.empty(offsets[-1], dtype=np.int32)
    flat[: offsets[len(real_ids)]] = np.concatenate([np.asarray(d, dtype=np.int32) for d in real_ids])
    cdf = np.cumsum(probabilities)
    start = int(offsets[len(real_ids)])
    chunk = 20_000_000  # draw in chunks to bound the float64 temporaries
    for lo in range(start, len(flat), chunk):
        hi = min(len(flat), lo + chunk)
        flat[lo:hi] = np.searchsorted(cdf, rng.random(hi - lo), side="right").clip(max=vocab_size - 1)
    return TokenIdDocs(flat, offsets)


def rank_bm25_latencies(
    docs: TokenIdDocs, id_to_term: list[str], index: BM25Index, questions: list[str], k: int
):
    """Per-query seconds of rank-bm25's BM25Okapi over the same terms, with the same query tokenization."""
    import bm25s
    from rank_bm25 import BM25Okapi

    started = time.perf_counter()
    okapi = BM25Okapi([[id_to_term[t] for t in doc] for doc in docs])
    build_s = time.perf_counter() - started
    latencies, top1 = [], []
    for question in questions:
        started = time.perf_counter()
        terms = bm25s.tokenize(
            [question], stopwords="en", stemmer=index._stemmer, return_ids=False, show_progress=False
        )[0]
        scores = okapi.get_scores(terms)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        latencies.append(time.perf_counter() - started)
        top1.append(int(top[0]))
    return latencies, build_s, top1


def run(n_docs: int, dataset: str, rank_bm25_queries: int, workdir: Path, k: int = 20) -> dict:
    import bm25s

    settings = BM25Settings()
    real = load_corpus(dataset)
    questions = load_questions(dataset).items
    position = {d.id: i for i, d in enumerate(real)}
    tokenized = bm25s.tokenize(
        [d.text for d in real], stopwords="en", stemmer=make_stemmer(settings.stemmer), show_progress=False
    )
    # bm25s numbers stemmed terms in set order, which changes with the hash seed; renumber them in sorted order
    # so that the seeded synthetic corpus is the same in every run.
    old_to_term = {i: term for term, i in tokenized.vocab.items()}
    vocab = {term: i for i, term in enumerate(sorted(tokenized.vocab))}
    real_ids = [[vocab[old_to_term[t]] for t in doc] for doc in tokenized.ids]
    started = time.perf_counter()
    docs = synthetic_corpus(real_ids, len(vocab), n_docs)
    generate_s = time.perf_counter() - started

    started = time.perf_counter()
    built = BM25Index.from_tokenized(bm25s.tokenization.Tokenized(ids=docs, vocab=vocab), settings)
    built.save(workdir)
    build_s = time.perf_counter() - started
    del built
    index = BM25Index.load(workdir, mmap=True)
    index.search([questions[0].question], k)  # JIT-compile / page in before timing

    texts = [q.question for q in questions]
    latencies, hits_at_1 = [], 0
    for q in questions:
        started = time.perf_counter()
        found, _ = index.search([q.question], k)[0]
        latencies.append(time.perf_counter() - started)
        hits_at_1 += len(found) > 0 and int(found[0]) == position[q.gold_doc_id]
    p50_ms = float(np.median(latencies) * 1000)
    disk_mb = sum(f.stat().st_size for f in workdir.iterdir()) / 2**20

    result = {
        "n_docs": len(docs),
        "p50_ms": round(p50_ms, 3),
        "p95_ms": round(float(np.percentile(latencies, 95) * 1000), 3),
        "rank_bm25_p50_ms": None,
        "speedup": None,
        "index_mb": round(index.index_bytes() / 2**20, 1),
        "index_disk_mb": round(disk_mb, 1),
        "recall_at_1": hits_at_1 / len(questions),
        "backend": index.model.backend,
        "n_queries": len(questions),
        "generate_s": round(generate_s, 1),
        "build_s": round(build_s, 1),
    }
    if len(docs) <= RANK_BM25_MAX_DOCS:
        id_to_term = [""] * (max(vocab.values()) + 1)
        for term, i in vocab.items():
            id_to_term[i] = term
        subset = texts[:rank_bm25_queries]
        peer, peer_build_s, _ = rank_bm25_latencies(docs, id_to_term, index, subset, k)
        ours_same = float(np.median(latencies[: len(subset)]) * 1000)
        result["rank_bm25_p50_ms"] = round(float(np.median(peer) * 1000), 3)
        result["rank_bm25_n_queries"] = len(subset)
        result["rank_bm25_build_s"] = round(peer_build_s, 1)
        result["speedup"] = round(result["rank_bm25_p50_ms"] / ours_same, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["targets"] = {"p50_ms_at_1m": TARGET_P50_MS_AT_1M, "speedup_at_100k": TARGET_SPEEDUP_AT_100K}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, required=True, help="corpus size (real abstracts + synthetic)")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="PubMedQA-format json")
    parser.add_argument("--rank-bm25-queries", type=int, default=100, help="questions timed on rank-bm25")
    parser.add_argument("--workdir", help="where the index is written (default: a temporary directory)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="ragroute-bm25-scale-"))
    try:
        result = run(args.docs, args.dataset, args.rank_bm25_queries, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
