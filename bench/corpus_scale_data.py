"""Synthetic PubMed-sized corpora for bench/corpus_scale.py: distractor TEXT and distractor VECTORS.

Text: every distractor is a sequence of whitespace tokens drawn independently from the real abstracts' token
frequencies (stop words, numbers and punctuation attached to words included, as they occur), with a length drawn
from the real abstracts' token counts; so BM25 sees the real vocabulary with its real document frequencies, only
without topical co-occurrence. Documents are built as bytes in vectorised chunks (tokens are JSON-escaped once,
per vocabulary entry), so ten million of them take minutes and never sit in memory together.

Vectors: embedding ten million texts with MiniLM on two CPU cores would take days, so the distractors' vectors are
drawn from a mixture fitted to the real abstracts' MiniLM embeddings (see :class:`VectorSampler`), then
L2-normalised like every MiniLM embedding. They keep the real vectors' mean and covariance (pairwise cosines, see
:func:`vector_stats`) and cluster around real abstracts about as tightly as real abstracts cluster together.
Each block of vectors is seeded by its first row, so a row's vector is the same whatever the corpus size.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SYNTHETIC_ID = "synth-{:09d}"


class TextSampler:
    """Draws distractor documents (as JSONL lines) from the token statistics of real abstracts."""

    def __init__(self, texts: list[str]) -> None:
        counts = Counter(token for text in texts for token in text.split())
        tokens = sorted(counts)  # sorted: the same vocabulary order (and so the same draws) in every run
        frequencies = np.array([counts[t] for t in tokens], dtype=np.float64)
        self.cdf = np.cumsum(frequencies / frequencies.sum())
        self.lengths = np.array([max(1, len(text.split())) for text in texts], dtype=np.int64)
        # Each entry is the token's JSON-escaped UTF-8 followed by one space, laid end to end.
        encoded = [json.dumps(t, ensure_ascii=False)[1:-1].encode() + b" " for t in tokens]
        self.token_len = np.array([len(e) for e in encoded], dtype=np.int64)
        self.token_start = np.zeros(len(encoded), dtype=np.int64)
        np.cumsum(self.token_len[:-1], out=self.token_start[1:])
        self.flat = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def lines(self, first: int, n: int, seed: int) -> bytes:
        """JSONL of distractors ``first .. first+n-1`` (ids ``synth-000000123``), seeded by (seed, first)."""
        rng = np.random.default_rng([seed, first])
        doc_tokens = rng.choice(self.lengths, size=n)
        ids = np.searchsorted(self.cdf, rng.random(int(doc_tokens.sum())), side="right")
        ids = ids.clip(max=len(self.cdf) - 1)
        out_len = self.token_len[ids]
        out_end = np.cumsum(out_len)
        out_start = out_end - out_len
        gather = np.arange(int(out_end[-1]), dtype=np.int64) + np.repeat(
            self.token_start[ids] - out_start, out_len
        )
        body = self.flat[gather].tobytes()
        doc_end_token = np.cumsum(doc_tokens)
        doc_end_byte = out_end[doc_end_token - 1]
        doc_start_byte = np.concatenate([[0], doc_end_byte[:-1]])
        parts = []
        for i, (lo, hi) in enumerate(zip(doc_start_byte.tolist(), doc_end_byte.tolist(), strict=True)):
            parts.append(
                b'{"id":"%s","title":"","text":"%s"}\n'
                % (SYNTHETIC_ID.format(first + i).encode(), body[lo : hi - 1])
            )
        return b"".join(parts)


def write_real_jsonl(path: Path, docs: list) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"id": d.id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")


def write_distractor_files(
    out_dir: Path,
    sampler: TextSampler,
    first: int,
    stop: int,
    seed: int,
    docs_per_file: int = 500_000,
    chunk: int = 10_000,
) -> Iterator[Path]:
    """Writes distractors ``first .. stop-1`` as JSONL files of ``docs_per_file`` lines; yields each file when done
    (written to a .part name first, so a killed run never leaves a half file under the final name)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for file_first in range(first, stop, docs_per_file):
        file_stop = min(stop, file_first + docs_per_file)
        path = out_dir / f"distractors_{file_first:09d}_{file_stop:09d}.jsonl"
        if not path.exists():
            part = path.with_suffix(".part")
            with part.open("wb") as fh:
                for lo in range(file_first, file_stop, chunk):
                    fh.write(sampler.lines(lo, min(chunk, file_stop - lo), seed))
            part.rename(path)
        yield path


class VectorSampler:
    """Distractor vectors from real document embeddings: a mixture centred on the real vectors.

    x = normalize(mu + sqrt(1 - g) * (r - mu) + sqrt(g) * L z), with r a uniformly chosen real embedding, mu their
    mean, L L^T their Ledoit-Wolf covariance and z standard normal. Every g keeps the real mean and covariance
    (the two terms' covariances add to (1 - g + g) Sigma); g sets how closely distractors hug real abstracts: g = 1
    is one Gaussian (no clusters), g -> 0 copies the real vectors. g is fitted without the questions: the value on
    a grid whose distractors' median cosine to their nearest real abstract is closest to the real abstracts' own
    median nearest-neighbour cosine (leave-one-out)."""

    GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(15))

    def __init__(self, real: np.ndarray, seed: int = 0) -> None:
        from sklearn.covariance import LedoitWolf

        self.real = np.asarray(real, dtype=np.float32)
        self.mean32 = self.real.mean(axis=0)
        fit = LedoitWolf().fit(self.real.astype(np.float64))
        self.shrinkage = float(fit.shrinkage_)
        self.chol = np.linalg.cholesky(fit.covariance_).astype(np.float32)
        self.gamma = 1.0
        sims = self.real @ self.real.T
        np.fill_diagonal(sims, -1.0)
        self.real_nn_cos = float(np.median(sims.max(axis=1)))
        fits = {g: self._nn_cos(g, seed) for g in self.GRID}
        self.gamma = min(fits, key=lambda g: abs(fits[g] - self.real_nn_cos))
        self.synthetic_nn_cos = fits[self.gamma]

    def _nn_cos(self, gamma: float, seed: int, n: int = 2000) -> float:
        saved, self.gamma = self.gamma, gamma
        sample = self.block(-1, n, seed).astype(np.float32)
        self.gamma = saved
        return float(np.median((sample @ self.real.T).max(axis=1)))

    @property
    def dim(self) -> int:
        return self.real.shape[1]

    def block(self, first: int, n: int, seed: int) -> np.ndarray:
        """(n, dim) float16 unit vectors for rows ``first .. first+n-1``, the same for the same (seed, first, n)."""
        rng = np.random.default_rng([seed, first + 1, 1])
        centres = self.real[rng.integers(0, len(self.real), size=n)]
        z = rng.standard_normal((n, self.dim), dtype=np.float32)
        x = z @ self.chol.T
        x *= np.float32(np.sqrt(self.gamma))
        x += self.mean32 * np.float32(1 - np.sqrt(1 - self.gamma))
        x += centres * np.float32(np.sqrt(1 - self.gamma))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float16)

    def describe(self) -> dict:
        return {
            "method": "mixture centred on real MiniLM abstract embeddings, Ledoit-Wolf covariance, unit-normalised",
            "n_real": len(self.real),
            "gamma": self.gamma,
            "ledoit_wolf_shrinkage": round(self.shrinkage, 3),
            "real_nn_cos_median": round(self.real_nn_cos, 3),
            "synthetic_nn_to_real_cos_median": round(self.synthetic_nn_cos, 3),
        }


def vector_stats(real: np.ndarray, synthetic: np.ndarray, queries: np.ndarray) -> dict:
    """How much the synthetic vectors resemble the real ones: pairwise cosines among each set, and each query's
    best cosine to the real set vs to an equally large synthetic sample (own abstract excluded is not needed:
    the question is whether synthetic vectors crowd the queries as real abstracts do)."""
    real = np.asarray(real, dtype=np.float32)
    synthetic = np.asarray(synthetic[: len(real)], dtype=np.float32)

    def pairwise(m: np.ndarray) -> np.ndarray:
        sims = m @ m.T
        return sims[np.triu_indices(len(m), 1)]

    pr, ps = pairwise(real), pairwise(synthetic)
    return {
        "n_fit": len(real),
        "pairwise_cos_real": {
            "mean": round(float(pr.mean()), 3),
            "p99": round(float(np.percentile(pr, 99)), 3),
        },
        "pairwise_cos_synthetic": {
            "mean": round(float(ps.mean()), 3),
            "p99": round(float(np.percentile(ps, 99)), 3),
        },
        "query_second_best_cos_real": round(float(np.median(np.sort(queries @ real.T, axis=1)[:, -2])), 3),
        "query_best_cos_synthetic": round(float(np.median((queries @ synthetic.T).max(axis=1))), 3),
    }
