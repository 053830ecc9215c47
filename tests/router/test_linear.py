"""The folded linear router gives the fitted pipeline's probabilities, for every feature group and option."""

from __future__ import annotations

import numpy as np
import pytest

from router.config import FeatureConfig
from router.features import column_transformer, feature_matrix
from router.linear import FOLDED_MAX_ROWS, LinearScorer, TfidfDot
from router.persist import RouterBundle


@pytest.fixture(scope="module")
def data(labelled):
    cfg = FeatureConfig()
    matrix = feature_matrix(labelled.questions, labelled.signals, cfg)
    return matrix, labelled.teacher_needed.astype(int)


def _fit(matrix, y, transformer, classifier):
    from sklearn.pipeline import Pipeline

    return Pipeline([("features", transformer), ("classifier", classifier)]).fit(matrix, y)


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic", "none"])
def test_scores_equal_predict_proba_for_each_calibration(data, calibration: str) -> None:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    matrix, y = data
    classifier = LogisticRegression(solver="liblinear", C=3.0)
    if calibration != "none":
        classifier = CalibratedClassifierCV(classifier, method=calibration, cv=3, ensemble=False)
    pipeline = _fit(matrix, y, column_transformer(FeatureConfig(), matrix.shape[1] - 1), classifier)
    scorer = LinearScorer.from_pipeline(pipeline)
    assert scorer is not None
    expected = pipeline.predict_proba(matrix)[:, 1]
    assert len(matrix) > FOLDED_MAX_ROWS  # the whole matrix takes the vectorized path, slices the folded one
    np.testing.assert_allclose(scorer.score(matrix), expected, rtol=0, atol=1e-12)
    folded = np.concatenate([scorer.score(matrix[i : i + FOLDED_MAX_ROWS]) for i in range(0, len(matrix), FOLDED_MAX_ROWS)])
    np.testing.assert_allclose(folded, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"sublinear_tf": False},
        {"norm": "l1"},
        {"norm": None},
        {"binary": True},
        {"use_idf": False},
        {"analyzer": "char_wb", "ngram_range": (2, 4), "lowercase": False},
    ],
)
def test_tfidf_dot_equals_the_vectorizer_transform(data, options: dict) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    matrix, _ = data
    texts = list(matrix[:, 0])
    vectorizer = TfidfVectorizer(min_df=2, **options).fit(texts[:200])
    weights = np.random.default_rng(0).normal(size=len(vectorizer.vocabulary_))
    dot = TfidfDot(vectorizer, weights)
    unseen = [*texts[200:], "", "zzzz qqqq", "Is IT   REALLY so??"]
    expected = vectorizer.transform(unseen) @ weights
    np.testing.assert_allclose([dot(text) for text in unseen], expected, rtol=0, atol=1e-12)


def test_unfolded_vectorizers_and_scaler_options_still_match(data) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    matrix, y = data
    n_numeric = matrix.shape[1] - 1
    transformer = ColumnTransformer(
        [
            ("counts", CountVectorizer(min_df=2), 0),  # not a TfidfVectorizer: applied as it is
            ("numeric", StandardScaler(with_mean=False), list(range(1, 1 + n_numeric))),
        ],
        sparse_threshold=1.0,
    )
    pipeline = _fit(matrix, y, transformer, LogisticRegression(solver="liblinear", max_iter=2000))
    scorer = LinearScorer.from_pipeline(pipeline)
    assert scorer is not None and scorer.blocks[0].text_dot is None
    np.testing.assert_allclose(scorer.score(matrix[:10]), pipeline.predict_proba(matrix[:10])[:, 1], rtol=0, atol=1e-10)


@pytest.mark.parametrize("calibrated", [False, True])
def test_non_linear_classifiers_take_the_pipeline_path(data, calibrated: bool) -> None:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.neighbors import KNeighborsClassifier

    matrix, y = data
    classifier = KNeighborsClassifier(10)
    if calibrated:
        classifier = CalibratedClassifierCV(classifier, method="sigmoid", cv=3, ensemble=False)
    pipeline = _fit(matrix, y, column_transformer(FeatureConfig(), matrix.shape[1] - 1), classifier)
    assert LinearScorer.from_pipeline(pipeline) is None
    bundle = RouterBundle(pipeline, 0.5, {"config": {"features": {}}})
    assert bundle.linear is None
    np.testing.assert_allclose(bundle.score(list(matrix[:, 0])[:20], None), pipeline.predict_proba(
        bundle.features(list(matrix[:, 0])[:20]))[:, 1])


def test_a_fitted_router_decides_with_the_folded_weights(fitted_bundle: RouterBundle, labelled) -> None:
    assert fitted_bundle.linear is not None
    matrix = fitted_bundle.features(labelled.questions, labelled.signals)
    expected = fitted_bundle.estimator.predict_proba(matrix)[:, 1]
    np.testing.assert_allclose(fitted_bundle.score(labelled.questions, labelled.signals), expected, rtol=0, atol=1e-12)
    for question, signals, want in zip(labelled.questions[:25], labelled.signals[:25], expected[:25], strict=True):
        use_teacher, score = fitted_bundle.route(question, signals)
        assert score == pytest.approx(want, abs=1e-12)
        assert use_teacher == (want >= fitted_bundle.threshold)
