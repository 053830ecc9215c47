"""Shared fixtures of the RAG tests: the demo corpus and one hybrid pipeline over it, built once per session
(encoding the 60 demo abstracts with the bundled MiniLM takes a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragroute.rag.corpus import DEMO_CORPUS, DEMO_QUESTIONS, Document, QAItem, load_corpus, load_questions


@pytest.fixture(scope="session")
def demo_corpus() -> list[Document]:
    return load_corpus(str(DEMO_CORPUS))


@pytest.fixture(scope="session")
def demo_questions() -> list[QAItem]:
    return load_questions(str(DEMO_QUESTIONS)).items


@pytest.fixture(scope="session")
def demo_index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rag-indexes")


@pytest.fixture(scope="session")
def demo_pipeline(demo_corpus: list[Document], demo_index_dir: Path):
    from ragroute.rag.pipeline import PipelineConfig, RAGPipeline

    # Session fixtures run before the function-scoped offline switch of tests/conftest.py, and huggingface_hub
    # reads HF_HUB_OFFLINE once, at import: set it here too, or a later hub lookup waits on network timeouts.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        cfg = PipelineConfig(retriever="hybrid", reranker="bi-encoder", index_dir=str(demo_index_dir))
        return RAGPipeline(cfg, demo_corpus)
