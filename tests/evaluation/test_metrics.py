"""Evaluation metrics against small cases computed by hand."""

import pytest

from evaluation.latency import SingleStream, sample_ids
from evaluation.metrics import bootstrap_ci, estimated_generation_s, macro_f1, system_metrics
from evaluation.systems import quality_curve
from ragroute.records import AnswerRecord


def rec(i, answer, gold, gen_s=1.0, gold_doc="D1", doc_ids=("D1", "D2"), share=None, tokens=10):
    timings = {"retrieval": 0.01, "rerank": 0.0, "filter": 0.0, "prompt": 0.0, "generation": gen_s}
    if share is not None:
        timings["generation_share"] = share
    return AnswerRecord(
        id=f"q{i}", question=f"q{i}?", answer=answer, model="m", doc_ids=list(doc_ids), gold_decision=gold,
        gold_answer="statins lower ldl", gold_doc_id=gold_doc, completion_tokens=tokens, timings=timings,
    )


def single(gen_s: list[float], tokens: int = 10, ttft: float | None = None) -> SingleStream:
    timed = SingleStream()
    for i, g in enumerate(gen_s):
        timed.timings[f"q{i}"] = {"retrieval": 0.01, "prompt": 0.0, "generation": g, **({"ttft": ttft} if ttft else {})}
        timed.tokens[f"q{i}"] = tokens
    return timed


def test_macro_f1_by_hand():
    gold = ["yes", "yes", "no", "maybe"]
    pred = ["yes", "no", "no", None]
    # yes: P=1 R=.5 F=2/3; no: P=.5 R=1 F=2/3; maybe: F=0  -> (2/3 + 2/3 + 0) / 3
    assert macro_f1(gold, pred) == pytest.approx(4 / 9)


def test_system_metrics_by_hand():
    records = [
        rec(0, "Yes. Statins lower LDL [0].", "yes", gen_s=1.0),  # right, cites own doc, valid
        rec(1, "No, they do not [1].", "yes", gen_s=2.0),  # wrong, cites D2 (valid, not own)
        rec(2, "No. See [5].", "no", gen_s=3.0),  # right, invalid citation
        rec(3, "It is unclear.", "maybe", gen_s=4.0),  # right: "unclear" reads as maybe
        rec(4, "Aspirin is a drug.", "no", gen_s=5.0),  # wrong: no decision at all
    ]
    m = system_metrics(records, [True, False, True, False, False], bootstrap=200, seed=1,
                       single=single([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    # yes: P=1 R=1/2 -> 2/3; no: P=1/2 R=1/2 -> 1/2; maybe: P=1 R=1 -> 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["citation_valid"] == pytest.approx(2 / 5)  # records 0 and 1: every citation names a prompt document
    assert m["has_citation"] == pytest.approx(3 / 5)
    assert m["own_abstract_cited"] == pytest.approx(1 / 5)
    assert m["teacher_share"] == pytest.approx(2 / 5)
    assert m["gen_latency_p50_s"] == pytest.approx(3.0)
    assert m["gen_latency_p95_s"] == pytest.approx(4.8)
    assert m["total_latency_p50_s"] == pytest.approx(3.01)
    assert m["output_tokens_per_s"] == pytest.approx(50 / 15.0)
    assert m["latency_n"] == 5 and m["stages"]["generation"]["p50_s"] == pytest.approx(3.0)
    assert m["batch_q_per_min"] is None  # these records carry no batch shares
    low, high = m["ci95"]["accuracy"]
    assert low <= m["accuracy"] <= high


def test_shape_only_records_have_timings_and_no_quality():
    records = [rec(0, "Yes. Statins lower LDL [0].", "yes", gen_s=1.0), rec(1, "", "no", gen_s=3.0)]
    for r in records:
        r.shape_only = True
    m = system_metrics(records, [True, False], bootstrap=50, seed=1, single=single([1.0, 3.0]))
    assert m["shape_only"] is True
    for key in ("accuracy", "macro_f1", "rouge_l", "citation_valid", "has_citation", "own_abstract_cited"):
        assert m[key] is None, key
    assert m["gen_latency_p50_s"] == pytest.approx(2.0)
    records[0].shape_only = False
    real = system_metrics(records[:1], [True], bootstrap=50, seed=1)
    assert real["shape_only"] is False and real["accuracy"] == pytest.approx(1.0)


def test_latencies_are_single_stream_and_throughput_is_batched():
    # Answered in batches: each question's recorded generation is its batch's 8 s; its share of the batch 1 s.
    records = [rec(i, "Yes.", "yes", gen_s=8.0, share=1.0) for i in range(4)]
    m = system_metrics(records, [True] * 4, bootstrap=0, single=single([0.5, 0.7, 0.6, 0.9]))
    assert m["gen_latency_p50_s"] == pytest.approx(0.65)
    assert m["total_latency_p50_s"] == pytest.approx(0.66)
    assert m["batch_q_per_min"] == pytest.approx(60 * 4 / (4 * 1.01))  # shares of generation + retrieval
    none = system_metrics(records, [True] * 4, bootstrap=0)
    assert none["gen_latency_p50_s"] is None and none["latency_n"] == 0 and none["stages"] == {}


def test_routed_single_stream_takes_the_chosen_models_timings_plus_the_router():
    teacher, student = single([4.0, 4.0, 4.0], tokens=20), single([1.0, 1.0, 1.0], tokens=5)
    routed = teacher.routed(student, {"q0": True, "q1": False, "q2": False}, {"q0": 0.001, "q1": 0.002, "q2": 0.003})
    assert [t["generation"] for t in routed.timings.values()] == [4.0, 1.0, 1.0]
    assert routed.timings["q1"]["router"] == 0.002 and routed.tokens == {"q0": 20, "q1": 5, "q2": 5}


def test_sample_ids_are_seeded_and_keep_their_order():
    ids = [f"q{i}" for i in range(100)]
    picked = sample_ids(ids, 10, seed=3)
    assert len(set(picked)) == 10 and picked == sorted(picked, key=ids.index) and picked == sample_ids(ids, 10, 3)
    assert sample_ids(ids, 10, seed=4) != picked
    assert sample_ids(ids[:5], 10, seed=3) == ids[:5]


def test_generation_time_estimated_from_answer_length():
    # Single stream: 0.2 s to the first token, then 11 tokens in 1.1 s: 0.1 s per further token.
    timed = single([1.3, 1.3], tokens=12, ttft=0.2)
    estimate = estimated_generation_s([rec(0, "Yes.", "yes", tokens=21), rec(1, "No.", "no", tokens=1)], timed)
    assert estimate == pytest.approx([0.2 + 0.1 * 21, 0.2 + 0.1 * 1])
    assert estimated_generation_s([rec(0, "Yes.", "yes")], None) is None


def test_bootstrap_ci_brackets_the_mean_and_needs_two_values():
    values = [0, 1] * 50
    low, high = bootstrap_ci(values, lambda v: sum(v) / len(v), 500, 0)
    assert low < 0.5 < high and high - low < 0.3
    assert bootstrap_ci([1], lambda v: 1.0, 100, 0) is None


def test_quality_curve_by_hand():
    teacher = [rec(i, "Yes.", "yes", gen_s=4.0) for i in range(4)]
    student = [rec(0, "Yes.", "yes", 1.0), rec(1, "No.", "yes", 1.0), rec(2, "No.", "yes", 1.0), rec(3, "Yes.", "yes", 1.0)]
    scores = [0.1, 0.9, 0.8, 0.2]  # the router ranks the two questions the student gets wrong first
    curve = quality_curve(teacher, student, scores, [4.0] * 4, [1.0] * 4)
    assert [p["teacher_share"] for p in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [p["accuracy"] for p in curve] == [0.5, 0.75, 1.0, 1.0, 1.0]
    assert curve[2]["gen_latency_mean_s"] == pytest.approx(2.5)
    assert quality_curve(teacher, student, scores)[2]["gen_latency_mean_s"] is None
