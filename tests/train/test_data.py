"""Records -> training examples: loss only on the answer, end-of-turn learned, bad input counted or refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from ragroute.errors import UserError
from train.data import (
    TOPK_PAD_LOGPROB,
    build_examples,
    end_of_turn_ids,
    load_teacher_records,
    split_examples,
    stored_topk,
)

from .conftest import add_teacher_topk, demo_records, write_records


@pytest.fixture(scope="module")
def tokenizer(teacher_dir: Path):
    return AutoTokenizer.from_pretrained(teacher_dir)


def test_labels_cover_exactly_the_answer_and_end_of_turn(tokenizer):
    record = demo_records(1)[0]
    [example], stats = build_examples([record], tokenizer, max_length=1024)
    prompt = tokenizer.apply_chat_template(record.messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert example.input_ids[: len(prompt)] == prompt
    assert example.labels[: len(prompt)] == [-100] * len(prompt)
    completion = example.labels[len(prompt) :]
    assert completion == example.input_ids[len(prompt) :]
    eot = end_of_turn_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(eot[0]) == "<|im_end|>"
    assert completion[-len(eot) :] == eot
    assert tokenizer.decode(completion[: -len(eot)]) == record.answer
    assert stats.answer_tokens == len(completion)


def test_records_without_answers_are_counted_not_trained(tokenizer):
    records = demo_records(4)
    records[1] = dataclasses.replace(records[1], answer="  ")
    examples, stats = build_examples(records, tokenizer, max_length=1024)
    assert len(examples) == 3 and stats.no_answer == 1
    with pytest.raises(UserError, match="no usable training examples"):
        build_examples([records[1]], tokenizer, max_length=1024)


def test_too_long_examples_are_truncated_or_dropped_and_counted(tokenizer):
    records = demo_records(6)
    lengths = [len(e.input_ids) for e in build_examples(records, tokenizer, 4096)[0]]
    limit = sorted(lengths)[2]  # half the examples are longer
    truncated, stats = build_examples(records, tokenizer, limit, too_long="truncate")
    assert stats.truncated == sum(n > limit for n in lengths) > 0
    assert all(len(e.input_ids) <= limit for e in truncated) and len(truncated) == 6
    dropped, stats = build_examples(records, tokenizer, limit, too_long="drop")
    assert stats.dropped_too_long == sum(n > limit for n in lengths) and len(dropped) == 6 - stats.dropped_too_long
    # A prompt that alone fills max_length leaves nothing to learn: dropped even under "truncate".
    with pytest.raises(UserError, match="6 longer than max_length=16"):
        build_examples(records, tokenizer, 16, too_long="truncate")


def test_missing_and_empty_data_files_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        load_teacher_records(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="no records"):
        load_teacher_records(str(tmp_path / "empty.jsonl"))


def test_teacher_topk_rows_line_up_with_answer_labels(tokenizer, tiny_model_dir: Path, tmp_path: Path):
    records = add_teacher_topk(demo_records(3), tiny_model_dir, k=4)
    path = write_records(tmp_path / "records.jsonl", records)
    loaded = load_teacher_records(str(path))
    assert stored_topk(loaded) == 4
    examples, stats = build_examples(loaded, tokenizer, 1024, topk=4)
    assert stats.with_teacher_topk == 3
    for example, record in zip(examples, loaded, strict=True):
        n_labels = sum(label != -100 for label in example.labels)
        assert len(example.topk_ids) == n_labels
        # The engine's stop token is not doubled: answer ids, then the template's end-of-turn tokens.
        answer_ids = record.answer_token_ids[:-1]
        labelled = [label for label in example.labels if label != -100]
        assert labelled[: len(answer_ids)] == answer_ids
        assert example.topk_ids[0] == [tok for tok, _ in record.top_logprobs[0]]
        # The end-of-turn token keeps the teacher's row where it stopped (so topk_kl teaches the stop); the
        # template's tokens after it have no stored row: padded to no teacher mass.
        assert example.topk_ids[len(answer_ids)] == [tok for tok, _ in record.top_logprobs[len(answer_ids)]]
        assert max(example.topk_logprobs[-1]) == TOPK_PAD_LOGPROB


def test_answers_cut_at_max_tokens_are_skipped_unless_kept(tokenizer):
    records = demo_records(4)
    records[1].finish_reason = "length"
    examples, stats = build_examples(records, tokenizer, 1024)
    assert stats.unfinished == 1 and [e.id for e in examples] == [records[i].id for i in (0, 2, 3)]
    kept, stats = build_examples(records, tokenizer, 1024, keep_unfinished=True)
    assert stats.unfinished == 0 and len(kept) == 4
    # Kept, it is taught without an end of turn: the teacher never ended it.
    eot = end_of_turn_ids(tokenizer)
    assert kept[1].labels[-len(eot):] != eot and kept[0].labels[-len(eot):] == eot


def test_split_is_seeded_and_holds_out_at_least_one(tokenizer):
    examples, _ = build_examples(demo_records(10), tokenizer, 1024)
    train, held = split_examples(examples, 0.1, seed=3)
    assert len(held) == 1 and len(train) == 9
    assert [e.id for e in split_examples(examples, 0.1, seed=3)[1]] == [e.id for e in held]
    assert {e.id for e in train}.isdisjoint(e.id for e in held)
