"""``main(cfg)``: teacher records -> tokenized split -> student (+ teacher) -> SFT / KD training -> final model + report."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ragroute.artifacts import Checkpoint, content_hash, provenance
from ragroute.config import config_to_dict
from ragroute.errors import UserError
from train.config import TrainConfig

log = logging.getLogger("ragroute.train")

# Settings that decide where and how visibly a run works, not the weights it trains.
EXECUTION_ONLY = frozenset({"output_dir", "resume", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
                            "dataloader_num_workers"})


def config_hash(cfg: TrainConfig) -> str:
    """The run's ``config_hash``: the canonical hash of what decides the trained weights (as data_gen's is of
    what decides the answers)."""
    return content_hash({k: v for k, v in config_to_dict(cfg).items() if k not in EXECUTION_ONLY})


def main(cfg: TrainConfig) -> dict[str, Any]:
    """``run(cfg)``; its report (``train_report.json``'s content)."""
    return run(cfg).report or {}


def run(cfg: TrainConfig) -> Checkpoint:
    """Train the student of ``cfg`` on its teacher records; the final model as a :class:`Checkpoint` (its
    ``report`` is the run's report; on a process other than the main one its ``info`` is empty)."""
    from transformers.trainer_utils import get_last_checkpoint

    from ragroute.hardware import pick_dtype, torch_dtype
    from ragroute.system import manifest_system
    from train import data, report
    from train.losses import make_kd_loss
    from train.student_init import load_student, load_tokenizer_for, resolve_model_ref
    from train.trainer import build_trainer

    started = time.perf_counter()
    compute = pick_dtype(cfg.dtype)
    on_gpu = compute != "float32" and _has_cuda()
    records = data.load_teacher_records(cfg.data, cfg.max_records)
    tokenizer = load_tokenizer_for(resolve_model_ref(cfg.student.model))
    kd_loss = make_kd_loss(cfg.loss)
    topk = data.stored_topk(records) if cfg.loss.name == "topk_kl" else None
    if topk == 0:
        raise UserError(f"loss topk_kl needs records with top_logprobs; {cfg.data} has none (data_gen logprobs)")
    examples, stats = data.build_examples(records, tokenizer, cfg.max_length, cfg.too_long, topk,
                                          cfg.keep_unfinished)
    train_ex, eval_ex = data.split_examples(examples, cfg.eval_fraction, cfg.seed)
    stats.train_examples, stats.eval_examples = len(train_ex), len(eval_ex)
    log.info(f"data: {stats.to_dict()}")

    # Full fine-tunes keep float32 master weights (autocast computes in bf16); LoRA freezes a bf16 base.
    weights_dtype = torch_dtype(compute if (cfg.lora.enabled and on_gpu) else "float32")
    student, student_info = load_student(
        cfg.student, tokenizer, weights_dtype, cfg.attn_implementation, cfg.lora.load_in_4bit, cfg.seed
    )
    shape_only = bool(student_info.get("shape_only"))
    teacher, vocab = _teacher(cfg, compute, tokenizer, student, shape_only) if cfg.needs_teacher else (None, None)
    log.info(f"student: {student_info}; loss {cfg.loss.name}; compute dtype {compute}")
    if shape_only:
        log.warning("shape-only models (random weights): throughput and memory are real; losses and the model are not")

    timer = report.StepTimer()
    trainer = build_trainer(
        cfg, student, tokenizer, data.to_dataset(train_ex, bool(topk)),
        data.to_dataset(eval_ex, bool(topk)) if eval_ex else None, kd_loss, teacher, compute, [timer],
    )
    resume_from = get_last_checkpoint(cfg.output_dir) if cfg.resume and Path(cfg.output_dir).is_dir() else None
    if cfg.resume and resume_from is None:
        log.info(f"resume: no checkpoint in {cfg.output_dir}, starting from step 0")
    result = trainer.train(resume_from_checkpoint=resume_from)
    eval_metrics = trainer.evaluate() if eval_ex else {}
    data_system = manifest_system(cfg.data)  # what wrote the training data: serve checks it against its own
    info = {"config_hash": config_hash(cfg), "student": student_info, "loss": cfg.loss.name,
            "data_system": data_system, "versions": provenance()["versions"]}
    final = save_final_model(trainer, tokenizer, cfg, info, torch_dtype(compute))
    report_extra = {
        "loss": cfg.loss.name, "resumed_from": resume_from, "final_model": str(final) if final else None,
        "data": stats.to_dict(),
        "compute_dtype": compute, "shared_vocab": vocab, "student": student_info, **provenance(cfg),
        "config_hash": info["config_hash"], "data_system": data_system, "shape_only": shape_only,
        **report.parallel_setup(trainer),
    }
    out = report.build_report(trainer, result, eval_metrics, timer, time.perf_counter() - started, report_extra)
    if trainer.accelerator.is_main_process:
        path = report.write_report(cfg.output_dir, out)
        log.info(f"report: {path} (steps {out['steps']}, loss {out['first_loss']} -> {out['final_loss']}, "
            f"eval {out['eval_loss']}, {out['tokens_per_s']:.0f} tokens/s)")
    model = Checkpoint.load(final) if final else Checkpoint(Path(cfg.output_dir) / "final")
    model.report = out
    return model


def _teacher(cfg: TrainConfig, compute: str, tokenizer: Any, student: Any, shape_only: bool) -> tuple[Any, int]:
    """The teacher model and the vocabulary size it shares with the student."""
    from ragroute.hardware import torch_dtype
    from train.student_init import load_teacher, shared_vocab_size

    teacher, teacher_tok, teacher_ref = load_teacher(cfg.teacher, torch_dtype(compute), cfg.attn_implementation, cfg.seed)
    if teacher_ref.shape_only != shape_only:
        raise UserError(
            "one of teacher and student is shape-only (random weights) and the other is not: distilling "
            "between them trains nothing; use two shape-only models (timing) or two real ones"
        )
    vocab = shared_vocab_size(
        tokenizer, teacher_tok, student.get_output_embeddings().weight.shape[0],
        teacher.get_output_embeddings().weight.shape[0],
    )
    return teacher, vocab


def save_final_model(trainer, tokenizer, cfg: TrainConfig, info: dict, dtype) -> Path | None:
    from train.export import save_final

    return save_final(trainer, tokenizer, cfg.output_dir, info, dtype)


def _has_cuda() -> bool:
    from ragroute.hardware import has_cuda

    return has_cuda()
