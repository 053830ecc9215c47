"""The optional MiniLM sentence-embedding features, with the real bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.config import FeatureConfig, RouterConfig
from router.features import feature_matrix
from router.fit import fit_router
from router.labels import build_labels
from router.persist import load_router, save_router


@pytest.mark.slow
def test_embedding_router_round_trip(pqal_items, pair_writer, tmp_path: Path) -> None:
    features = FeatureConfig(word_ngrams=1, char_ngrams=[], embeddings=True)
    matrix = feature_matrix(["Is aspirin safe?", "What is malaria?"], None, features)
    embedding = np.asarray(matrix[:, -384:], dtype=float)
    assert np.linalg.norm(embedding, axis=1) == pytest.approx([1.0, 1.0])  # normalized MiniLM vectors
    cfg = RouterConfig(features=features, cv_folds=3, param_grid={"C": [1.0]})
    labelled = build_labels(*pair_writer(tmp_path, pqal_items[:100])[:2], cfg.labels)  # MiniLM is slow on CPU
    bundle = fit_router(labelled, cfg)
    loaded = load_router(save_router(bundle, tmp_path / "minilm.skops"))
    questions = labelled.questions[:20]
    np.testing.assert_allclose(loaded.score(questions, labelled.signals[:20]),
                               bundle.score(questions, labelled.signals[:20]), rtol=1e-9)
    assert loaded.metadata["config"]["features"]["embeddings"] is True
