"""Verdict-first answers: token ids, probabilities, calibrated offsets, and real two-step generation."""

from __future__ import annotations

import math
import random

import pytest

from ragroute.engines.base import EngineConfig, GenerationRequest, SamplingConfig, create_engine
from ragroute.errors import UserError
from ragroute.models import load_tokenizer
from ragroute.quality import extract_decision
from ragroute.verdict import (
    VerdictConfig,
    calibrated,
    choose,
    cross_fitted_verdicts,
    entropy,
    fit_bias,
    margin,
    probabilities,
    verdict_token_ids,
)

QUESTIONS = [
    [{"role": "user", "content": "Answer Yes, No or Maybe first. Does aspirin reduce fever?"}],
    [{"role": "user", "content": "Answer Yes, No or Maybe first. Is the moon made of cheese?"}],
    [{"role": "user", "content": "Answer Yes, No or Maybe first. Do statins lower LDL cholesterol?"}],
]


def test_verdict_tokens_are_distinct_single_tokens(teacher_dir):
    ids = verdict_token_ids(load_tokenizer(str(teacher_dir)))
    flat = [t for tokens in ids.values() for t in tokens]
    assert len(flat) == len(set(flat)) and all(len(tokens) >= 2 for tokens in ids.values())


def test_probabilities_sum_spellings_and_renormalize():
    ids = {"yes": [1, 2], "no": [3], "maybe": [4]}
    probs = probabilities({1: math.log(0.2), 2: math.log(0.1), 3: math.log(0.3), 4: -math.inf, 9: math.log(0.4)}, ids)
    assert probs == pytest.approx({"yes": 0.5, "no": 0.5, "maybe": 0.0})
    assert choose(probs, {"yes": 0.0, "no": 0.1, "maybe": 0.0}) == "no"
    assert margin({"yes": 0.7, "no": 0.2, "maybe": 0.1}) == pytest.approx(0.5)
    assert entropy({"yes": 1 / 3, "no": 1 / 3, "maybe": 1 / 3}) == pytest.approx(math.log(3))
    assert calibrated({"yes": 0.5, "no": 0.5, "maybe": 0.0}, {"no": math.log(3)})["no"] == pytest.approx(0.75)


def test_offsets_recover_a_shifted_prior_and_cross_fitting_never_sees_its_own_question(monkeypatch):
    # The model over-says "no" by a constant factor; the signal (yes vs no) is real, so the offset must undo it.
    rng = random.Random(0)
    gold = [rng.choice(["yes"] * 6 + ["no"] * 4) for _ in range(400)]
    probs = []
    for g in gold:
        yes = min(max(rng.gauss(0.65 if g == "yes" else 0.35, 0.1), 0.01), 0.99) * 0.3  # shrunk: "no" dominates
        probs.append({"yes": yes, "no": 1 - yes - 0.01, "maybe": 0.01})
    raw = sum(choose(p, {}) == g for p, g in zip(probs, gold, strict=True)) / len(gold)
    for objective in ("log_loss", "accuracy"):
        bias = fit_bias(probs, gold, objective)
        fitted = sum(choose(p, bias) == g for p, g in zip(probs, gold, strict=True)) / len(gold)
        assert bias["no"] < 0 and fitted > raw + 0.2, objective
    import ragroute.verdict as verdict_module

    fits = []
    monkeypatch.setattr(verdict_module, "fit_bias", lambda p, g, *rest: fits.append(list(p)) or fit_bias(p, g, *rest))
    verdicts, biases = cross_fitted_verdicts(probs, gold, folds=5)
    assert [len(f) for f in fits] == [320] * 5  # one fit per fold, each without that fold's 80 questions
    for k, fitted_on in enumerate(fits):
        held = {id(p) for i, p in enumerate(probs) if biases[i] is not None} - {id(p) for p in fitted_on}
        assert len(held) == 80, k
    assert sum(v == g for v, g in zip(verdicts, gold, strict=True)) / len(gold) > raw + 0.15


def test_select_keeps_the_models_verdict_when_no_calibration_generalizes():
    """Nested selection: a real prior shift is corrected; pure noise (the verdict carries no signal, gold is
    balanced) keeps the model's own verdict instead of offsets fitted to noise."""
    rng = random.Random(1)
    gold = [rng.choice(["yes"] * 6 + ["no"] * 4) for _ in range(300)]
    shifted = [{"yes": y, "no": 1 - y - 0.01, "maybe": 0.01}
               for y in (min(max(rng.gauss(0.65 if g == "yes" else 0.35, 0.1), 0.01), 0.99) * 0.3 for g in gold)]
    assert fit_bias(shifted, gold, "select")["no"] < 0
    noise_gold = [rng.choice(["yes", "no"]) for _ in range(300)]
    noise = [{"yes": y, "no": 0.99 - y, "maybe": 0.01} for y in (rng.uniform(0.3, 0.69) for _ in noise_gold)]
    selected = fit_bias(noise, noise_gold, "select")
    raw = sum(choose(p, {}) == g for p, g in zip(noise, noise_gold, strict=True))
    chosen = sum(choose(p, selected) == g for p, g in zip(noise, noise_gold, strict=True))
    assert selected == {"yes": 0.0, "no": 0.0, "maybe": 0.0} or chosen >= raw


def test_bad_bias_keys_are_rejected():
    with pytest.raises(ValueError, match="verdict.bias"):
        VerdictConfig(bias={"yes": 0.0})


def verdict_first(max_tokens: int, **verdict) -> SamplingConfig:
    return SamplingConfig(max_tokens=max_tokens, verdict=VerdictConfig(enabled=True, **verdict))


def requests(messages: list) -> list[GenerationRequest]:
    return [GenerationRequest(messages=m) for m in messages]


def test_transformers_verdict_first_answers(tiny_model_spec):
    engine = create_engine(tiny_model_spec, EngineConfig.of("transformers", batch_size=3))
    answers = engine.generate(requests(QUESTIONS), verdict_first(6))
    for answer in answers:
        probs = answer.verdict_probs
        assert set(probs) == {"yes", "no", "maybe"} and sum(probs.values()) == pytest.approx(1.0)
        assert answer.verdict == max(probs, key=probs.get)
        assert extract_decision(answer.text) == answer.verdict
        assert answer.timings["verdict"] > 0 and answer.completion_tokens >= 2
    # An offset large enough forces the verdict whatever the model prefers.
    forced = engine.generate(requests(QUESTIONS[:2]), verdict_first(4, bias={"yes": 0.0, "no": 0.0, "maybe": 50.0}))
    assert {a.verdict for a in forced} == {"maybe"}
    # A raw prompt has no chat turn to continue: a clear error.
    with pytest.raises(UserError, match="chat messages"):
        engine.generate([GenerationRequest(prompt="Is it?")], verdict_first(4))


@pytest.mark.slow
def test_vllm_verdict_probabilities_match_transformers(vllm_teacher, teacher_spec, same_teacher_verdict):
    sampling = SamplingConfig(max_tokens=24, stop=["\n\n"], verdict=VerdictConfig(enabled=True))
    fast = vllm_teacher.generate(requests(QUESTIONS), sampling)
    slow = create_engine(teacher_spec, EngineConfig(name="transformers")).generate(requests(QUESTIONS), sampling)
    for a, b in zip(fast, slow, strict=True):
        same_teacher_verdict(a, b)  # both engines in the teacher's dtype; they batch and round differently
        assert a.text.startswith(a.verdict.capitalize() + ".") and len(a.text) > 4


def test_openai_engine_says_when_the_server_cannot_constrain(tiny_model_spec):
    """A real OpenAI-compatible server that ignores vLLM's extensions (the echo upstream) is named clearly."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "serve.echo_upstream", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        engine = create_engine(tiny_model_spec, EngineConfig.of("openai", base_url=f"http://127.0.0.1:{port}/v1"))
        with pytest.raises(UserError, match="cannot constrain"):
            engine.generate(requests(QUESTIONS[:1]), verdict_first(4))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
