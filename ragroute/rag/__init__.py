"""The RAG pipeline: corpus loading, retrieval (bm25s, dense, hybrid), rerank, filter and prompt building.

Entry points: :mod:`ragroute.rag.corpus` (``load_corpus``, ``load_questions``) and :mod:`ragroute.rag.pipeline`
(``PipelineConfig``, ``RAGPipeline``). Nothing heavy is imported here.
"""
