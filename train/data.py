"""Teacher records -> tokenized prompt/answer examples with the loss on the answer tokens only.

Each :class:`ragroute.records.AnswerRecord` becomes one example: the chat messages the teacher saw (system
instruction + user prompt with the retrieved context) rendered with the student's chat template and a generation
prompt, followed by the teacher's answer and the template's end-of-turn tokens. ``labels`` are ``-100`` on the
prompt, so the loss covers only what the student must learn to say (TRL's completion-only loss on a
prompt-completion conversational example; we tokenize here rather than in ``SFTTrainer`` so that the teacher's own
answer token ids, and the top-k logprobs stored for them, line up with the label positions exactly).

Bad input is never silently trained on: a missing or empty file is a :class:`UserError`, and records without an
answer, examples cut by ``max_length`` and examples dropped are counted in :class:`DataStats` (and the report).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.errors import UserError
from ragroute.records import AnswerRecord, read_records

# Padding of the top-k rows: a logprob this low is exp() == 0, so it carries no teacher mass.
TOPK_PAD_LOGPROB = -1.0e4


@dataclass
class DataStats:
    """What happened to every record on its way to a training example."""

    records: int = 0
    no_answer: int = 0  # empty answer: nothing to learn from
    unfinished: int = 0  # cut at max_tokens: the teacher never ended it (skipped unless keep_unfinished)
    truncated: int = 0  # answer tail cut at max_length
    dropped_too_long: int = 0  # prompt alone reaches max_length, or too_long=drop
    with_teacher_topk: int = 0  # examples carrying the teacher's top-k logprobs
    train_examples: int = 0
    eval_examples: int = 0
    answer_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]
    # One row per answer token (label position, in order): the teacher's top-k token ids and logprobs.
    topk_ids: list[list[int]] = field(default_factory=list)
    topk_logprobs: list[list[float]] = field(default_factory=list)


def load_teacher_records(path: str, max_records: int | None = None) -> list[AnswerRecord]:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"training data not found: {path} (run `ragroute data-gen` first, or set data)")
    try:
        records = read_records(p)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"training data {path} is not a records JSONL file: {exc}") from None
    if max_records is not None:
        records = records[:max_records]
    if not records:
        raise UserError(f"training data {path} holds no records")
    return records


def _prompt_ids(tokenizer: Any, record: AnswerRecord) -> list[int]:
    if record.messages:
        ids = tokenizer.apply_chat_template(record.messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    if record.prompt:  # a raw prompt that already holds its template
        return tokenizer(record.prompt, add_special_tokens=False)["input_ids"]
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": record.question}], add_generation_prompt=True, tokenize=True
    )["input_ids"]


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The tokens the chat template puts after an assistant answer (``<|im_end|>\\n`` for ChatML), so the student
    learns to stop; the tokenizer's EOS where the template cannot be probed."""
    probe = [{"role": "user", "content": "q"}]
    marker = "ANSWER-MARKER"
    try:
        head = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            [*probe, {"role": "assistant", "content": marker}], tokenize=False
        )
    except (ValueError, TypeError, KeyError):
        head, full = "", ""
    if full.startswith(head + marker) and full[len(head) + len(marker) :].strip():
        suffix = full[len(head) + len(marker) :]
        return tokenizer(suffix, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise UserError("the student tokenizer has neither a chat template nor an EOS token to end answers with")
    return [tokenizer.eos_token_id]


def _answer_rows(
    tokenizer: Any, record: AnswerRecord, stop_ids: set[int]
) -> tuple[list[int], list[list[int]], list[list[float]]]:
    """Answer token ids, and the teacher's top-k rows for them where data_gen stored them."""
    if record.answer_token_ids:
        ids = list(record.answer_token_ids)
        rows = list(record.top_logprobs or [])[: len(ids)]
        # The engine may return the stop token it ended on; the end-of-turn tokens are appended once, below. The
        # teacher's row at that token is kept: it is its distribution where it stopped, the end-of-turn's target
        # (dropping it left topk_kl nothing to teach the stop with).
        while ids and ids[-1] in stop_ids:
            ids.pop()
        rows = rows[: len(ids) + 1]
    else:
        ids = tokenizer(record.answer.strip(), add_special_tokens=False)["input_ids"]
        rows = []
    topk_ids = [[int(tok) for tok, _ in row] for row in rows]
    topk_lps = [[float(lp) for _, lp in row] for row in rows]
    return ids, topk_ids, topk_lps


def _pad_rows(rows_ids: list[list[int]], rows_lps: list[list[float]], n: int, k: int) -> tuple[list, list]:
    out_ids, out_lps = [], []
    for i in range(n):
        ids = rows_ids[i][:k] if i < len(rows_ids) else []
        lps = rows_lps[i][:k] if i < len(rows_lps) else []
        out_ids.append(ids + [0] * (k - len(ids)))
        out_lps.append(lps + [TOPK_PAD_LOGPROB] * (k - len(lps)))
    return out_ids, out_lps


def build_examples(
    records: list[AnswerRecord],
    tokenizer: Any,
    max_length: int,
    too_long: str = "truncate",
    topk: int | None = None,
    keep_unfinished: bool = False,
) -> tuple[list[Example], DataStats]:
    """Tokenize every record; ``topk`` (the k of the stored logprobs) keeps the teacher's rows per answer token.
    Answers cut at max_tokens are skipped unless ``keep_unfinished`` (then without an end-of-turn: the teacher
    did not end them)."""
    stats = DataStats(records=len(records))
    eot = end_of_turn_ids(tokenizer)
    stop_ids = {eot[0]} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
    examples: list[Example] = []
    for record in records:
        if not (record.answer or "").strip() and not record.answer_token_ids:
            stats.no_answer += 1
            continue
        unfinished = record.finish_reason == "length"
        if unfinished and not keep_unfinished:
            stats.unfinished += 1
            continue
        prompt = _prompt_ids(tokenizer, record)
        answer, rows_ids, rows_lps = _answer_rows(tokenizer, record, stop_ids)
        completion = answer + ([] if unfinished else eot)
        total = len(prompt) + len(completion)
        if total > max_length:
            if too_long == "drop" or len(prompt) >= max_length:
                stats.dropped_too_long += 1
                continue
            completion = completion[: max_length - len(prompt)]
            stats.truncated += 1
        example = Example(
            id=str(record.id),
            input_ids=prompt + completion,
            labels=[-100] * len(prompt) + completion,
        )
        if topk:
            if rows_ids:
                stats.with_teacher_topk += 1
            example.topk_ids, example.topk_logprobs = _pad_rows(rows_ids, rows_lps, len(completion), topk)
        stats.answer_tokens += len(completion)
        examples.append(example)
    if not examples:
        raise UserError(
            f"no usable training examples: {stats.records} records, {stats.no_answer} without an answer, "
            f"{stats.unfinished} cut at max_tokens (keep_unfinished: true trains on them), "
            f"{stats.dropped_too_long} longer than max_length={max_length}"
        )
    return examples, stats


def stored_topk(records: list[AnswerRecord]) -> int:
    """The k of the teacher's stored top-k logprobs (0 when no record has them)."""
    return max((len(row) for r in records for row in (r.top_logprobs or [])[:1]), default=0)


def split_examples(examples: list[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded held-out split (at least one eval example when eval_fraction > 0 and there are two or more)."""
    if eval_fraction <= 0 or len(examples) < 2:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(eval_fraction * len(examples))))
    eval_idx = set(order[:n_eval])
    train = [e for i, e in enumerate(examples) if i not in eval_idx]
    held = [e for i, e in enumerate(examples) if i in eval_idx]
    return train, held


def to_dataset(examples: list[Example], with_topk: bool):
    """A ``datasets.Dataset`` with ``input_ids`` and ``labels`` (so SFTTrainer skips its own tokenization)."""
    from datasets import Dataset

    columns: dict[str, list[Any]] = {
        "input_ids": [e.input_ids for e in examples],
        "labels": [e.labels for e in examples],
    }
    if with_topk:
        columns["topk_ids"] = [e.topk_ids for e in examples]
        columns["topk_logprobs"] = [e.topk_logprobs for e in examples]
    return Dataset.from_dict(columns)
