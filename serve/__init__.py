"""The routed inference API (floor 3): RAG pipeline -> router -> student or teacher, with fallback.

``ragroute serve --config configs/serve/NAME.yaml`` runs it under uvicorn. Modules: ``config`` (settings),
``backends`` (in-process vLLM / transformers, upstream OpenAI-compatible servers), ``routing`` (router file or
policy), ``service`` (routing, timeouts, fallback, concurrency), ``app`` (HTTP), ``metrics`` (Prometheus),
``server`` (uvicorn runners), ``echo_upstream`` (a fake upstream for load tests).
"""
