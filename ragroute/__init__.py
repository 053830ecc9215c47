"""ragroute: fast biomedical RAG QA by distillation and routing.

This package is the shared core (floor 1): configuration, model provisioning, generation engines, the RAG
pipeline, dataset records and answer-quality metrics. The stages (data_gen, train, router) and the composers
(serve, evaluation) import from here, never the other way round.
"""

__version__ = "0.1.0"
