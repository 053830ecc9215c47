"""The distilled student ends its answers on its own: after logit KD from the real SmolLM2 teacher, the real
pruned SmolLM2 student stops with the end-of-turn token about where the teacher's answers end, where before
training it runs on (the cause of the demo's long student answers: the teacher's own stop is a low-margin
token, P(<|im_end|>) ~0.3 at the end of its answers, and matching that distribution alone does not teach it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ragroute.config import load_config
from train.config import TrainConfig
from train.data import build_examples, end_of_turn_ids
from train.main import main

from .conftest import demo_records, write_records


def greedy_answer_lengths(model_dir: Path, records, limit: int) -> list[int | None]:
    """Tokens each record's prompt is answered with, greedily, until the end of turn (None: not ended in
    ``limit`` tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    end = end_of_turn_ids(tokenizer)[0]
    lengths = []
    for record in records:
        prompt = tokenizer.apply_chat_template(record.messages, add_generation_prompt=True, tokenize=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=limit, do_sample=False, eos_token_id=end,
                                 pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
        lengths.append(out.index(end) if end in out else None)
    return lengths


@pytest.mark.slow
def test_distilled_student_ends_its_answers_like_the_teacher(tmp_path: Path, student_dir: Path, teacher_dir: Path):
    from transformers import AutoTokenizer

    records = demo_records(4)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    examples, _ = build_examples(records, tokenizer, 512)
    eot = len(end_of_turn_ids(tokenizer))
    teacher_lengths = [sum(label != -100 for label in e.labels) - eot for e in examples]
    limit = 2 * max(teacher_lengths)
    before = greedy_answer_lengths(student_dir, records, limit)
    assert None in before  # the pruned student, untrained, runs on past twice the teacher's length

    cfg = load_config(TrainConfig, None, [
        f"data={write_records(tmp_path / 'records.jsonl', records)}", f"output_dir={tmp_path / 'run'}",
        f"student.model={student_dir}", f"teacher={teacher_dir}", "loss.name=forward_kl", "loss.sft_weight=0.5",
        "eval_fraction=0.0", "per_device_batch_size=4", "max_steps=8", "learning_rate=5.0e-4",
        "lr_scheduler=constant", "warmup_ratio=0.0", "max_length=512", "dtype=float32", "save_steps=0",
    ])
    assert cfg.loss.end_weight > 0  # the default
    after = greedy_answer_lengths(Path(main(cfg)["final_model"]), records, limit)
    assert None not in after, after
    for answered, teacher in zip(after, teacher_lengths, strict=True):
        assert 0.5 * teacher <= answered <= 1.5 * teacher, (after, teacher_lengths)
