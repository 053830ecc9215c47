"""The RAG pipeline shared by data_gen, serve and evaluation: retrieve ▶ rerank ▶ filter ▶ prompt.

    pipeline = RAGPipeline(load_pipeline_config("configs/pipeline/v3.1.yaml"), load_corpus("corpus.jsonl"))
    prepared = pipeline.prepare("Do statins reduce LDL cholesterol?")
    prepared.messages   # chat messages for an engine; prepared.docs are cited as [0], [1], ...
    prepared.timings    # seconds per stage: retrieval, rerank, filter, prompt

Indexes are built on first use and cached on disk (``index_dir``), so the next process loads them instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ragroute.errors import UserError
from ragroute.rag.config import PipelineConfig
from ragroute.rag.corpus import Document, load_corpus
from ragroute.rag.filter import DuplicateKeys, filter_hits
from ragroute.rag.prompt import build_messages
from ragroute.rag.rerank import create_reranker
from ragroute.rag.retrieve import IndexStore, create_retriever
from ragroute.rag.store import CorpusReader, CorpusStore, is_store


def open_corpus(corpus: str) -> list[Document] | CorpusReader:
    """A corpus store directory as a :class:`CorpusStore` (memory-mapped), anything else through ``load_corpus``."""
    return CorpusStore.open(corpus) if is_store(corpus) else load_corpus(corpus)


__all__ = ["PipelineConfig", "PreparedPrompt", "RAGPipeline", "RetrievedDoc", "load_pipeline_config", "open_corpus"]

STAGES = ("retrieval", "rerank", "filter", "prompt")


def load_pipeline_config(path: str | None, overrides: list[str] | None = None) -> PipelineConfig:
    """A :class:`PipelineConfig` from a YAML file (``configs/pipeline/NAME.yaml``) plus ``key=value`` overrides."""
    from ragroute.config import load_config

    return load_config(PipelineConfig, path, overrides or ())


@dataclass
class RetrievedDoc:
    id: str
    title: str
    text: str  # the full text; the prompt holds the truncated one
    score: float  # the last stage's score: reranker, else retriever (BM25, cosine or fused RRF)


@dataclass
class PreparedPrompt:
    question: str
    docs: list[RetrievedDoc]
    messages: list[dict[str, str]]
    # Seconds per stage. From prepare_batch, a batched stage's time is shared equally among its questions.
    timings: dict[str, float] = field(default_factory=dict)


class RAGPipeline:
    def __init__(self, cfg: PipelineConfig, corpus: list[Document] | CorpusReader) -> None:
        if not len(corpus):
            raise UserError("the RAG pipeline needs at least one document")
        self.cfg = cfg
        self.store = IndexStore(cfg, corpus)
        self.corpus = self.store.corpus  # the read protocol: documents by position (InMemoryCorpus for a list)
        self.duplicate_keys = DuplicateKeys(self.corpus)
        self.retriever = create_retriever(cfg, self.store)
        self.reranker = create_reranker(cfg, self.store)

    @classmethod
    def from_config(cls, cfg: PipelineConfig) -> RAGPipeline:
        """A pipeline over ``cfg.corpus``: a corpus store directory (with ``cfg.index``), a file, or 'demo' (the
        bundled demo corpus)."""
        if cfg.corpus is None:
            raise UserError("the pipeline config names no corpus: set corpus (a store directory, a file, or 'demo')")
        return cls(cfg, open_corpus(cfg.corpus))

    def warmup(self) -> None:
        """Run one throw-away question so that lazy initialisation (torch kernels, page-ins of the memory-mapped
        indexes) is not charged to the first real one."""
        self.prepare("warm-up question about clinical outcomes")

    def prepare(self, question: str) -> PreparedPrompt:
        return self.prepare_batch([question])[0]

    def prepare_batch(self, questions: list[str]) -> list[PreparedPrompt]:
        """Retrieve, rerank, filter and build the prompt for every question; retrieval and reranking run
        batched (one BM25 call, one encoder pass for all questions)."""
        if not questions:
            return []
        for i, question in enumerate(questions):
            if not isinstance(question, str) or not question.strip():
                raise UserError(f"question {i} is empty")
        cfg = self.cfg
        n = len(questions)
        timings: dict[str, float] = {}

        started = time.perf_counter()
        candidates = self.retriever.retrieve(questions, cfg.retrieval_n)
        timings["retrieval"] = time.perf_counter() - started

        started = time.perf_counter()
        if cfg.rerank_depth is not None:
            candidates = [hits[: cfg.rerank_depth] for hits in candidates]
        candidates = self.reranker.rerank(questions, candidates)
        timings["rerank"] = time.perf_counter() - started

        started = time.perf_counter()
        kept = [
            filter_hits(hits, self.duplicate_keys, cfg.final_n, cfg.min_score, cfg.dedup)
            for hits in candidates
        ]
        timings["filter"] = time.perf_counter() - started

        prepared = []
        for question, hits in zip(questions, kept, strict=True):
            started = time.perf_counter()
            docs = [
                RetrievedDoc(id=d.id, title=d.title, text=d.text, score=h.score)
                for h, d in zip(hits, self.corpus.documents([h.doc for h in hits]), strict=True)
            ]
            messages = build_messages(
                question, docs, cfg.instruction, cfg.template, cfg.max_chars, cfg.instruction_as_system
            )
            own = {stage: timings[stage] / n for stage in STAGES[:3]}
            own["prompt"] = time.perf_counter() - started
            prepared.append(PreparedPrompt(question=question, docs=docs, messages=messages, timings=own))
        return prepared
