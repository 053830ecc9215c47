"""TRL's SFTTrainer, extended with logit distillation against an online or stored teacher.

* ``loss.name == "sft"``: SFTTrainer unchanged (completion-only loss, TRL's fused chunked LM head).
* otherwise :class:`DistillationTrainer` overrides ``compute_loss``: the student backbone and (no-grad) the teacher
  backbone run once, the answer positions are selected, and the KD divergence (``train.losses``) plus an optional
  cross-entropy term are computed tile by tile from the hidden states. The call goes through the DDP/FSDP wrapper
  (TRL's ``_ForwardRedirection``) so gradient synchronisation and sharded parameters behave as in a plain forward.
* ``loss.on_policy_fraction``: that share of steps replaces the teacher's answers by the student's own samples
  (GKD, Agarwal et al. 2024), scored by the teacher; those steps train on the divergence alone.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ragroute.errors import UserError
from train.config import TrainConfig
from train.losses import Head, KDLoss, cross_entropy_per_token


class TopKCollator(DataCollatorForLanguageModeling):
    """Pads like SFTTrainer's collator and stacks the teacher's top-k rows of every answer token, in label order."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [row for e in examples for row in e.pop("topk_ids")]
        lps = [row for e in examples for row in e.pop("topk_logprobs")]
        batch = super().torch_call(examples)
        batch["topk_ids"] = torch.tensor(ids, dtype=torch.long)
        batch["topk_logprobs"] = torch.tensor(lps, dtype=torch.float32)
        return batch


def _backbone(model: Any) -> Any:
    from accelerate.utils import is_peft_model

    if is_peft_model(model):
        model = model.base_model.model
    return model.base_model


class DistillationTrainer(SFTTrainer):
    """SFTTrainer whose loss mixes a KD divergence with cross-entropy on the teacher's answer tokens."""

    def __init__(
        self,
        *args: Any,
        kd_loss: KDLoss | None,
        train_cfg: TrainConfig,
        teacher_model: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        from trl.models import prepare_deepspeed
        from trl.models.utils import _ForwardRedirection

        self.kd_loss = kd_loss
        self.loss_cfg = train_cfg.loss
        self._forward_redirection = _ForwardRedirection()
        self.teacher_model = None
        if teacher_model is not None:
            if self.is_deepspeed_enabled:
                self.teacher_model = prepare_deepspeed(teacher_model, self.accelerator)
            elif self.is_fsdp_enabled:
                # A whole frozen replica per process: accelerate's prepare_model neither places nor wraps an
                # evaluation model under FSDP (it would stay on the CPU), and an FSDP-sharded teacher would hand
                # back a sharded lm_head weight outside its forward, which the tiled KD loss reads directly.
                self.teacher_model = teacher_model.to(self.accelerator.device)
            else:
                self.teacher_model = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        self._on_policy_step = False
        from train.data import end_of_turn_ids

        self.end_token_id = end_of_turn_ids(self.processing_class)[0]

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and self.kd_loss is not None:
            self._signature_columns = list(self._signature_columns) + ["topk_ids", "topk_logprobs"]

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.kd_loss is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        if self._on_policy_step:
            num_items_in_batch = None  # counted on the original answers; the sampled ones differ in length
        unwrapped = self.accelerator.unwrap_model(model)
        # Accelerate applies mixed precision by wrapping model.forward in autocast; the redirection replaces that
        # forward, so autocast is entered here (without it the student would run in float32/TF32: 1.9x slower).
        with self.accelerator.autocast():
            loss, kd_sum, ce_sum, n_tokens = self._forward_redirection(
                model, unwrapped, self._distillation_loss, unwrapped, inputs, num_items_in_batch
            )
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        n = self.accelerator.gather_for_metrics(n_tokens.detach()).sum().clamp(min=1)
        self._metrics[mode]["kd_loss"].append((self.accelerator.gather_for_metrics(kd_sum).sum() / n).item())
        self._metrics[mode]["ce_loss"].append((self.accelerator.gather_for_metrics(ce_sum).sum() / n).item())
        if mode == "train":
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["position_ids"].numel(), device=inputs["input_ids"].device)
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(local).sum().item())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, None) if return_outputs else loss

    def _distillation_loss(self, student_model, inputs, num_items_in_batch):
        model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
        for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"):
            if key in inputs:
                model_inputs[key] = inputs[key]
        labels = inputs["labels"][:, 1:]
        mask = labels != -100
        hidden = _backbone(student_model)(**model_inputs, use_cache=False).last_hidden_state[:, :-1][mask]
        head = student_model.get_output_embeddings()
        student = Head(hidden, head.weight, head.bias)
        teacher = None
        if self.kd_loss.needs_teacher:
            teacher_unwrapped = self.accelerator.unwrap_model(self.teacher_model)
            with torch.no_grad():
                t_hidden = self._forward_redirection(
                    self.teacher_model,
                    teacher_unwrapped,
                    lambda **kw: _backbone(teacher_unwrapped)(**kw).last_hidden_state,
                    **model_inputs,
                    use_cache=False,
                )[:, :-1][mask]
            t_head = teacher_unwrapped.get_output_embeddings()
            teacher = Head(t_hidden, t_head.weight, t_head.bias)

        kd_per_token = self.kd_loss.per_token(student, teacher, inputs)
        kd_sum = kd_per_token.sum() * self.loss_cfg.temperature**2
        total = self.loss_cfg.kd_weight * kd_sum
        ce_sum = torch.zeros((), device=hidden.device)
        sft_weight = 0.0 if self._on_policy_step else self.loss_cfg.sft_weight
        if sft_weight > 0:
            ce_sum = cross_entropy_per_token(student, labels[mask]).sum()
            total = total + sft_weight * ce_sum
        if self.loss_cfg.end_weight > 0 and not self._on_policy_step:
            total = total + self.loss_cfg.end_weight * self._end_cross_entropy(student, labels[mask])
        n_tokens = mask.sum()
        denom = n_tokens.clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        if isinstance(denom, torch.Tensor):
            denom = denom.to(total.device)
        return total / denom, kd_sum.detach(), ce_sum.detach(), n_tokens

    def _end_cross_entropy(self, student: Head, targets: torch.Tensor) -> torch.Tensor:
        """Summed ``-log p(end of turn)`` at the positions where the teacher's answer ends."""
        at_end = targets == self.end_token_id
        if not bool(at_end.any()):
            return student.hidden.new_zeros((), dtype=torch.float32)
        return cross_entropy_per_token(Head(student.hidden[at_end], student.weight, student.bias), targets[at_end]).sum()

    # ------------------------------------------------------------------ on-policy

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._on_policy_step = self.loss_cfg.on_policy_fraction > 0 and random.random() < self.loss_cfg.on_policy_fraction
        if self._on_policy_step:
            inputs = self._student_samples(model, inputs)
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._on_policy_step = False

    @torch.no_grad()
    def _student_samples(self, model, inputs: dict[str, Any]) -> dict[str, Any]:
        """The batch with each answer replaced by the student's own sample for the same prompt."""
        from trl.models.utils import unwrap_model_for_generation

        tokenizer = self.processing_class
        eos = {tokenizer.eos_token_id, *([self.model.generation_config.eos_token_id] if isinstance(
            self.model.generation_config.eos_token_id, int) else (self.model.generation_config.eos_token_id or []))}
        examples = []
        with unwrap_model_for_generation(
            model, self.accelerator, gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs
        ) as unwrapped:
            was_training = unwrapped.training
            unwrapped.eval()
            for row_ids, row_labels in zip(inputs["input_ids"], inputs["labels"], strict=True):
                prompt_len = int((row_labels != -100).nonzero()[0].item())
                prompt = row_ids[:prompt_len].unsqueeze(0)
                out = unwrapped.generate(
                    input_ids=prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=self.loss_cfg.max_new_tokens,
                    do_sample=True,
                    temperature=self.loss_cfg.temperature,
                    top_k=0,
                    top_p=1.0,
                    pad_token_id=tokenizer.pad_token_id,
                    use_cache=True,
                )[0, prompt_len:].tolist()
                for i, tok in enumerate(out):
                    if tok in eos:
                        out = out[: i + 1]
                        break
                ids = row_ids[:prompt_len].tolist() + out
                examples.append({"input_ids": ids, "labels": [-100] * prompt_len + out})
            unwrapped.train(was_training)
        batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)
        return {k: v.to(inputs["input_ids"].device) for k, v in batch.items()}


def _check_kernels(cfg: TrainConfig) -> None:
    """Fail early, with a clear message, when use_liger_kernel is set but the package cannot run."""
    if not cfg.use_liger_kernel:
        return
    if not torch.cuda.is_available():
        raise UserError("use_liger_kernel: true needs a CUDA GPU (Liger's kernels are Triton); set it to false here")
    from transformers.utils import is_liger_kernel_available

    if not is_liger_kernel_available():
        raise UserError(
            "use_liger_kernel: true needs the liger-kernel package (>= 0.3.0, with triton and a CUDA GPU): "
            "pip install 'ragroute[train-gpu]' or liger-kernel, or set use_liger_kernel: false"
        )


def training_arguments(cfg: TrainConfig, compute_dtype: str, has_eval: bool) -> SFTConfig:
    """SFTConfig (transformers TrainingArguments + TRL's SFT options) for this run."""
    _check_kernels(cfg)
    on_cuda = torch.cuda.is_available()
    optim = cfg.optim if cfg.optim != "auto" else ("adamw_torch_fused" if on_cuda else "adamw_torch")
    eval_strategy = "no"
    if has_eval and cfg.eval_steps:
        eval_strategy = "steps"
    return SFTConfig(
        output_dir=cfg.output_dir,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=optim,
        bf16=compute_dtype == "bfloat16",
        fp16=compute_dtype == "float16",
        use_cpu=not on_cuda,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        use_liger_kernel=cfg.use_liger_kernel,
        torch_compile=cfg.torch_compile,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,  # unused when 0 (no checkpoints)
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=cfg.dataloader_num_workers,
        # Every trainable parameter takes part in each step (full fine-tune or LoRA adapters). transformers would
        # otherwise default to True without gradient checkpointing: an extra autograd traversal per DDP step.
        ddp_find_unused_parameters=False,
        max_length=cfg.max_length,
        packing=cfg.packing,
        dataset_num_proc=None,
        model_init_kwargs=None,
    )


def build_trainer(
    cfg: TrainConfig,
    student: Any,
    tokenizer: Any,
    train_dataset: Any,
    eval_dataset: Any,
    kd_loss: KDLoss | None,
    teacher: Any = None,
    compute_dtype: str = "float32",
    callbacks: list[Any] | None = None,
) -> DistillationTrainer:
    peft_config = None
    if cfg.lora.enabled:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            task_type="CAUSAL_LM",
        )
    args = training_arguments(cfg, compute_dtype, has_eval=eval_dataset is not None)
    collator = None
    if kd_loss is not None and not kd_loss.needs_teacher:
        collator = TopKCollator(pad_token_id=tokenizer.pad_token_id)
    return DistillationTrainer(
        model=student,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        peft_config=peft_config,
        callbacks=callbacks,
        kd_loss=kd_loss,
        train_cfg=cfg,
        teacher_model=teacher,
    )
