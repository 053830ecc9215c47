"""Teacher records for the train tests: the bundled demo questions with their long answers as the teacher's answer,
optionally with top-k logprobs computed by a real model forward (what data_gen stores from vLLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragroute.records import AnswerRecord, JsonlWriter

DEMO_QUESTIONS = Path(__file__).resolve().parents[2] / "ragroute" / "data" / "demo" / "questions.jsonl"
SYSTEM = "Answer the biomedical question from the numbered context documents; cite them like [0]."


def root_conftest():
    """tests/conftest.py as a module (importlib import mode gives conftests no importable name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ragroute_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def demo_records(n: int | None = None) -> list[AnswerRecord]:
    records = []
    for line in DEMO_QUESTIONS.read_text().splitlines()[:n]:
        q = json.loads(line)
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"[0] Document {q['doc_id']}.\n\nQuestion: {q['question']}"},
        ]
        records.append(
            AnswerRecord(id=q["id"], question=q["question"], answer=q["long_answer"], model="teacher", messages=messages)
        )
    return records


def add_teacher_topk(records: list[AnswerRecord], model_dir: Path, k: int = 5) -> list[AnswerRecord]:
    """Fill answer_token_ids/top_logprobs from a real forward of ``model_dir`` over prompt + answer, the way an engine
    reports them (the stop token it ended on included)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for record in records:
        prompt = tokenizer.apply_chat_template(record.messages, add_generation_prompt=True, tokenize=True)["input_ids"]
        answer = tokenizer(record.answer, add_special_tokens=False)["input_ids"] + [end]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
        logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1].float(), dim=-1)
        top = torch.topk(logprobs, k, dim=-1)
        record.answer_token_ids = answer
        record.top_logprobs = [
            [[int(i), float(v)] for i, v in zip(ids, vals, strict=True)]
            for ids, vals in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]
    return records


def write_records(path: Path, records: list[AnswerRecord]) -> Path:
    with JsonlWriter(path, fsync=False) as writer:
        for record in records:
            writer.write(record)
    return path


@pytest.fixture(scope="session")
def records_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_records(tmp_path_factory.mktemp("records") / "records.jsonl", demo_records())


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory: pytest.TempPathFactory, teacher_dir: Path) -> Path:
    """A tiny Llama with other random weights than ``tiny_model_dir`` (the tiny teacher), same tokenizer."""
    return root_conftest().make_tiny_llama(tmp_path_factory.mktemp("tiny-student"), teacher_dir, seed=1)


@pytest.fixture(scope="session")
def topk_records_path(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    records = add_teacher_topk(demo_records(8), tiny_model_dir)
    return write_records(tmp_path_factory.mktemp("topk") / "records.jsonl", records)
