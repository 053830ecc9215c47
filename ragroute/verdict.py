"""Verdict-first answers to yes/no/maybe questions, enforced by the engine, with the verdict's probabilities.

An answer is generated in two steps on the same prompt:

1. **the verdict**: one token constrained to the verdict words (``allowed_token_ids``), with the log-probabilities
   of every spelling of ``Yes``/``No``/``Maybe`` from the full-vocabulary softmax (``logprob_token_ids``). Their
   mass per verdict, renormalized, is ``verdict_probs``. The verdict written is the argmax of the log-probabilities
   plus calibrated per-verdict offsets (``VerdictConfig.bias``, fitted by cross-validation: ``ragroute verdict
   calibrate``), because a small model's raw verdict prior is far from the questions' base rates.
2. **the explanation**: the chat continued after the assistant prefix ``"Yes."`` (vLLM and transformers render the
   template with ``continue_final_message``; prefix caching makes the second prefill nearly free).

Both faces of every engine run the two steps (:mod:`ragroute.engines.verdict_first`) when the sampling says
``verdict.enabled``; the verdict settings are part of the sampling, so of the system spec and its hash. The cascade
(:mod:`ragroute.cascade`) decides between the two steps whether the student goes on. This module is the pure part:
token ids, probabilities, the choice, and the calibration of the offsets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ragroute.quality import DECISIONS

# Surface forms of each verdict as the first answer token (checked to be one distinct token each).
SPELLINGS: dict[str, tuple[str, ...]] = {
    "yes": ("Yes", " Yes", "yes", " yes"),
    "no": ("No", " No", "no", " no"),
    "maybe": ("Maybe", " Maybe", "maybe", " maybe"),
}


@dataclass
class VerdictConfig:
    """Verdict-first answers for yes/no/maybe questions (switch off for free-text questions)."""

    enabled: bool = field(default=False, metadata={"help": "start every answer with an engine-enforced Yes/No/Maybe"})
    bias: dict[str, float] = field(
        default_factory=lambda: {v: 0.0 for v in DECISIONS},
        metadata={"help": "per-verdict offsets added to the log-probabilities before the argmax (calibrated priors "
                  "from `ragroute verdict calibrate`; 0 = the model's own choice)"},
    )

    min_explanation_tokens: int = field(
        default=16,
        metadata={"help": "the explanation after the verdict has at least this many tokens (small models otherwise end "
                  "their turn right after 'Yes.')"},
    )

    def __post_init__(self) -> None:
        if self.min_explanation_tokens < 0:
            raise ValueError(f"verdict.min_explanation_tokens must be >= 0, not {self.min_explanation_tokens}")
        if set(self.bias) != set(DECISIONS):
            raise ValueError(f"verdict.bias needs exactly the keys {', '.join(DECISIONS)}, not {sorted(self.bias)}")


def verdict_token_ids(tokenizer: Any) -> dict[str, list[int]]:
    """verdict -> the first-token ids of its spellings; every spelling must be a single, unshared token."""
    ids: dict[str, list[int]] = {}
    seen: set[int] = set()
    for verdict, spellings in SPELLINGS.items():
        ids[verdict] = []
        for spelling in spellings:
            tokens = tokenizer.encode(spelling, add_special_tokens=False)
            if len(tokens) != 1 or tokens[0] in seen:
                continue  # a multi-token or shared spelling cannot be told apart by its first token
            seen.add(tokens[0])
            ids[verdict].append(tokens[0])
        if not ids[verdict]:
            raise ValueError(f"the tokenizer has no single-token spelling of '{verdict}'")
    return ids


def probabilities(step: dict[int, float], ids: dict[str, list[int]]) -> dict[str, float]:
    """P(yes/no/maybe) from one step's {token_id: logprob}: each verdict's spellings summed, renormalized."""
    mass = {v: sum(math.exp(step[t]) for t in tokens if t in step and step[t] > -math.inf) for v, tokens in ids.items()}
    total = sum(mass.values())
    if total <= 0:
        return {v: 1.0 / len(ids) for v in ids}
    return {v: m / total for v, m in mass.items()}


def choose(probs: dict[str, float], bias: dict[str, float]) -> str:
    """The verdict with the largest log-probability plus its offset."""
    return max(DECISIONS, key=lambda v: math.log(max(probs[v], 1e-12)) + bias.get(v, 0.0))


def prefix_text(verdict: str) -> str:
    """How the answer opens: ``"Yes."``."""
    return f"{verdict.capitalize()}."


def margin(probs: dict[str, float]) -> float:
    """Top verdict probability minus the runner-up's (0 = undecided, 1 = certain)."""
    top = sorted(probs.values(), reverse=True)
    return top[0] - top[1]


def entropy(probs: dict[str, float]) -> float:
    """Shannon entropy of the verdict distribution in nats (0 = certain, ln 3 = uniform)."""
    return -sum(p * math.log(p) for p in probs.values() if p > 0)


# -- calibration: per-verdict offsets fitted on gold verdicts, evaluated by cross-validation ------------------------

BIAS_GRID = tuple(x / 10 for x in range(-60, 61))  # offsets relative to "yes", in nats: -6 .. 6


def _log_probs(probs: Sequence[dict[str, float]]) -> Any:
    import numpy as np

    return np.log(np.clip(np.array([[p[v] for v in DECISIONS] for p in probs], dtype=float), 1e-12, None))


def fit_bias(probs: Sequence[dict[str, float]], gold: Sequence[str], objective: str = "log_loss") -> dict[str, float]:
    """Per-verdict offsets (yes fixed at 0) for argmax(log p + offset).

    ``log_loss``: the offsets that make p_v * exp(offset_v) the best-calibrated distribution on ``gold`` (maximum
    likelihood, a prior correction; smooth, so it overfits little). ``accuracy``: a grid search for the offsets
    that maximize accuracy on ``gold`` (among equally accurate ones the smallest win). ``select``: whichever of no
    offsets (the model's own verdict), ``log_loss`` and ``accuracy`` has the best accuracy cross-validated on
    ``gold`` itself (ties to the simpler); inside :func:`cross_fitted_verdicts` that is a nested choice, so a
    calibration that does not generalize is not taken."""
    if objective == "log_loss":
        return _fit_bias_log_loss(probs, gold)
    if objective == "select":
        return _select_bias(probs, gold)
    if objective != "accuracy":
        raise ValueError(f"objective must be log_loss, accuracy or select, not '{objective}'")
    import numpy as np

    logp, y = _log_probs(probs), np.array([DECISIONS.index(g) for g in gold])
    grid = np.array(BIAS_GRID)
    best, best_key = (0.0, 0.0), None
    for b_no in grid:
        # Every b_maybe at once: accuracy per column of a (n, len(grid)) decision matrix.
        shifted_no = logp[:, 1] + b_no
        top_yes_no = np.where(shifted_no > logp[:, 0], 1, 0)
        top_value = np.maximum(shifted_no, logp[:, 0])
        maybe = logp[:, 2:3] + grid[None, :]
        choice = np.where(maybe > top_value[:, None], 2, top_yes_no[:, None])
        accuracy = (choice == y[:, None]).mean(axis=0)
        for b_maybe, acc in zip(grid, accuracy, strict=True):
            key = (round(float(acc), 12), -(abs(b_no) + abs(b_maybe)))
            if best_key is None or key > best_key:
                best, best_key = (float(b_no), float(b_maybe)), key
    return {"yes": 0.0, "no": best[0], "maybe": best[1]}


def _fit_bias_log_loss(probs: Sequence[dict[str, float]], gold: Sequence[str]) -> dict[str, float]:
    import numpy as np
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    logp, y = _log_probs(probs), np.array([DECISIONS.index(g) for g in gold])

    def loss(b: np.ndarray) -> tuple[float, np.ndarray]:
        z = logp + np.concatenate([[0.0], b])
        log_q = z - logsumexp(z, axis=1, keepdims=True)
        grad = (np.exp(log_q) - np.eye(3)[y]).mean(axis=0)[1:]
        return float(-log_q[np.arange(len(y)), y].mean()), grad

    fitted = minimize(loss, np.zeros(2), jac=True, method="L-BFGS-B", bounds=[(-10, 10)] * 2).x
    return {"yes": 0.0, "no": round(float(fitted[0]), 4), "maybe": round(float(fitted[1]), 4)}


def _select_bias(probs: Sequence[dict[str, float]], gold: Sequence[str], folds: int = 5) -> dict[str, float]:
    def accuracy(verdicts: Sequence[str]) -> float:
        return sum(v == g for v, g in zip(verdicts, gold, strict=True)) / len(gold)

    best, best_score = "none", accuracy([choose(p, {}) for p in probs])
    if len(probs) >= 2 * folds:
        for objective in ("log_loss", "accuracy"):
            score = accuracy(cross_fitted_verdicts(probs, gold, folds, 0, objective)[0])
            if score > best_score:
                best, best_score = objective, score
    return {v: 0.0 for v in DECISIONS} if best == "none" else fit_bias(probs, gold, best)


def cross_fitted_verdicts(
    probs: Sequence[dict[str, float]], gold: Sequence[str], folds: int = 5, seed: int = 0, objective: str = "log_loss"
) -> tuple[list[str], list[dict[str, float]]]:
    """Each question's verdict under offsets fitted on the other folds (never on itself), and those offsets."""
    import numpy as np

    n = len(probs)
    order = np.random.default_rng(seed).permutation(n)
    verdicts: list[str] = [""] * n
    biases: list[dict[str, float]] = [{}] * n
    for k in range(folds):
        held = set(order[k::folds].tolist())
        train = [i for i in range(n) if i not in held]
        bias = fit_bias([probs[i] for i in train], [gold[i] for i in train], objective)
        for i in held:
            verdicts[i], biases[i] = choose(probs[i], bias), bias
    return verdicts, biases


def calibrated(probs: dict[str, float], bias: dict[str, float]) -> dict[str, float]:
    """The verdict distribution after the offsets: p_v * exp(bias_v), renormalized."""
    weights = {v: probs[v] * math.exp(bias.get(v, 0.0)) for v in DECISIONS}
    total = sum(weights.values()) or 1.0
    return {v: w / total for v, w in weights.items()}
