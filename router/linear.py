"""A fitted linear router as one weight vector per feature block: the decision path for single questions.

For a linear classifier, ``Pipeline.predict_proba`` on one question spends most of its time outside the
arithmetic: input checks in the ColumnTransformer, the StandardScaler and the classifier, stacking the blocks
into one sparse row, and the calibration wrapper's bookkeeping. The same number is

    calibrator(intercept + sum over blocks of block_features @ block_weights)

where the StandardScaler is folded into the weights of the numeric block (``w / scale``, with the mean moved into
the intercept). A TF-IDF block's contribution is folded the same way: its fitted analyzer splits the question,
and each known n-gram adds ``tf * idf * w`` before the row's l2 norm divides the sum (:class:`TfidfDot`), so
one question costs a dictionary lookup per n-gram instead of scikit-learn's sparse-matrix validation, which
was 80% of the time of a TF-IDF transform of one question. Tests compare both with ``predict_proba`` on every
feature group, calibration and vectorizer option.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

# Above this many questions scikit-learn's vectorized transform amortizes its checks and is faster than the
# per-question loop (measured: equal at ~50 questions).
FOLDED_MAX_ROWS = 32


class TfidfDot:
    """``text -> vectorizer.transform([text]) @ weights`` for a fitted ``TfidfVectorizer``, without the matrix."""

    def __init__(self, vectorizer: Any, weights: np.ndarray) -> None:
        self.analyze = vectorizer.build_analyzer()
        idf = vectorizer.idf_ if vectorizer.use_idf else np.ones(len(weights))
        self.terms = {term: (float(idf[j]), float(idf[j] * weights[j])) for term, j in vectorizer.vocabulary_.items()}
        self.binary, self.sublinear_tf, self.norm = vectorizer.binary, vectorizer.sublinear_tf, vectorizer.norm

    @staticmethod
    def supports(vectorizer: Any) -> bool:
        from sklearn.feature_extraction.text import TfidfVectorizer

        return type(vectorizer) is TfidfVectorizer and vectorizer.norm in ("l1", "l2", None)

    def __call__(self, text: str) -> float:
        terms = self.terms
        counts = Counter(gram for gram in self.analyze(text) if gram in terms)
        dot = norm = 0.0
        for gram, count in counts.items():
            tf = 1.0 if self.binary else (1.0 + math.log(count) if self.sublinear_tf else float(count))
            idf, idf_weight = terms[gram]
            dot += tf * idf_weight
            value = tf * idf
            norm += value * value if self.norm == "l2" else abs(value)
        if self.norm is None or norm == 0.0:
            return dot
        return dot / (math.sqrt(norm) if self.norm == "l2" else norm)


def binary_calibrated_parts(classifier: Any) -> tuple[Any, Any] | None:
    """(inner estimator, its calibrator) of a ``CalibratedClassifierCV`` fitted with ``ensemble=False`` on two
    classes: its probability is ``calibrator.predict(inner's decision values)``. None for anything else."""
    from sklearn.calibration import CalibratedClassifierCV

    if not isinstance(classifier, CalibratedClassifierCV) or len(classifier.calibrated_classifiers_) != 1:
        return None
    calibrated = classifier.calibrated_classifiers_[0]
    if len(calibrated.calibrators) != 1:  # binary: one calibrator for the positive class
        return None
    return calibrated.estimator, calibrated.calibrators[0]


@dataclass
class _Block:
    columns: Any  # the ColumnTransformer's column selection of this block
    weights: np.ndarray  # the numeric block's are already divided by the scaler's scale
    transformer: Any = None  # the block's fitted text vectorizer (None: the numeric block)
    text_dot: TfidfDot | None = None  # the same TF-IDF vectorizer, folded for a few questions at a time


class LinearScorer:
    """``score(matrix)`` = the fitted pipeline's ``predict_proba(matrix)[:, 1]`` for a linear classifier."""

    def __init__(self, blocks: list[_Block], intercept: float, calibrator: Any | None) -> None:
        self.blocks = blocks
        self.intercept = intercept
        self.calibrator = calibrator  # None: the classifier's own logistic link

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> LinearScorer | None:
        """The scorer of a fitted ``Pipeline([ColumnTransformer, classifier])``, or None when it is not linear."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        columns, classifier = pipeline.steps[0][1], pipeline.steps[-1][1]
        calibrator = None
        if isinstance(classifier, CalibratedClassifierCV):
            parts = binary_calibrated_parts(classifier)
            if parts is None:
                return None
            classifier, calibrator = parts
        if not isinstance(classifier, LogisticRegression) or classifier.coef_.shape[0] != 1:
            return None
        coef = np.asarray(classifier.coef_[0], dtype=float)
        intercept = float(classifier.intercept_[0])
        blocks = []
        for name, transformer, selection in columns.transformers_:
            if name == "remainder" or transformer == "drop":
                continue
            weights = coef[columns.output_indices_[name]]
            if isinstance(transformer, StandardScaler):
                scale = transformer.scale_ if transformer.scale_ is not None else np.ones_like(weights)
                weights = weights / scale
                if transformer.mean_ is not None and transformer.with_mean:
                    intercept -= float(weights @ transformer.mean_)
                blocks.append(_Block(selection, weights))
            elif TfidfDot.supports(transformer):
                blocks.append(_Block(selection, weights, transformer, TfidfDot(transformer, weights)))
            elif hasattr(transformer, "vocabulary_"):
                blocks.append(_Block(selection, weights, transformer=transformer))
            else:
                return None
        return cls(blocks, intercept, calibrator)

    def decision(self, matrix: np.ndarray) -> np.ndarray:
        """The classifier's decision values (log-odds before calibration) of the feature matrix's rows."""
        total = np.full(len(matrix), self.intercept)
        for block in self.blocks:
            column = matrix[:, block.columns]
            if block.text_dot is not None and len(column) <= FOLDED_MAX_ROWS:
                total += np.fromiter((block.text_dot(text) for text in column), dtype=float, count=len(column))
            elif block.transformer is not None:
                total += block.transformer.transform(column) @ block.weights
            else:
                total += column.astype(float) @ block.weights
        return total

    def score(self, matrix: np.ndarray) -> np.ndarray:
        decision = self.decision(matrix)
        if self.calibrator is None:
            return 1.0 / (1.0 + np.exp(-decision))
        return np.asarray(self.calibrator.predict(decision), dtype=float)
