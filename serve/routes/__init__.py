"""The API's routes, one module per area: probes (``health``), RAG answers (``answer``), OpenAI chat (``chat``)."""
