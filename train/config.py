"""The train stage's settings: which student and teacher, which loss, how long, where the result goes.

One YAML per run under ``configs/train/``; every field is also a ``--flag`` of ``ragroute train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Loss names -> what they mean. "sft" needs no teacher logits; the three divergences need the teacher online;
# "topk_kl" reads the teacher's top-k logprobs stored by data_gen.
LOSS_NAMES = ("sft", "forward_kl", "reverse_kl", "jsd", "topk_kl")
TOO_LONG_POLICIES = ("truncate", "drop")


@dataclass
class StudentConfig:
    """Where the student starts from."""

    model: str = field(
        default="ragroute:smollm2-135m-pruned",
        metadata={
            "help": "model config name under configs/models/ (e.g. qwen2.5-1.5b), ragroute:NAME in the model cache, "
            "hub id or local directory"
        },
    )
    prune_layers: int | None = field(
        default=None,
        metadata={"help": "depth-prune on the fly: keep this many decoder layers (ragroute.pruning) before training"},
    )
    prune_method: str = field(
        default="importance",
        metadata={"help": "which layers to drop when prune_layers is set: importance (ShortGPT) or every_other"},
    )

    def __post_init__(self) -> None:
        if self.prune_layers is not None and self.prune_layers < 1:
            raise ValueError(f"student.prune_layers must be >= 1, not {self.prune_layers}")
        if self.prune_method not in ("importance", "every_other"):
            raise ValueError(f"student.prune_method must be importance or every_other, not '{self.prune_method}'")


@dataclass
class LoraConfig:
    """Parameter-efficient fine-tuning (PEFT LoRA); off means a full fine-tune."""

    enabled: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    r: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "module names that get adapters (never lm_head: the KD loss reads its weight directly)"},
    )
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: load the frozen base in 4-bit NF4 (needs CUDA and bitsandbytes)"}
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, not {self.r}")
        if "lm_head" in self.target_modules:
            raise ValueError("lora.target_modules must not contain lm_head: the distillation loss reads its weight")
        if self.load_in_4bit and not self.enabled:
            raise ValueError("lora.load_in_4bit (QLoRA) needs lora.enabled: true")


@dataclass
class LossConfig:
    """What the student is trained to match."""

    name: str = field(
        default="sft",
        metadata={
            "help": "sft (sequence-level KD: cross-entropy on the teacher's answers), forward_kl, reverse_kl, jsd "
            "(logit KD against the online teacher), topk_kl (offline: the teacher's stored top-k logprobs)"
        },
    )
    kd_weight: float = field(default=1.0, metadata={"help": "weight of the distillation term (ignored for sft)"})
    sft_weight: float = field(
        default=0.0, metadata={"help": "weight of the cross-entropy on the teacher's answer tokens (1.0 for sft)"}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "softmax temperature of both distributions; the KD term is scaled by T^2"}
    )
    beta: float = field(default=0.5, metadata={"help": "jsd mixture weight: 0 = forward KL, 1 = reverse KL"})
    on_policy_fraction: float = field(
        default=0.0,
        metadata={"help": "share of steps trained on student-generated answers scored by the teacher (GKD lambda)"},
    )
    max_new_tokens: int = field(default=128, metadata={"help": "longest on-policy student answer"})
    end_weight: float = field(
        default=1.0,
        metadata={"help": "weight of a cross-entropy on the end-of-answer token (the chat template's end of turn), "
                  "added to the KD objectives: where to stop is one token in ~40 and decides the answer's length, "
                  "and a divergence that only matches the teacher's distribution there leaves a student that "
                  "often keeps going (0: off)"},
    )

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ValueError(f"unknown loss '{self.name}' (known: {', '.join(LOSS_NAMES)})")
        if self.temperature <= 0:
            raise ValueError(f"loss.temperature must be > 0, not {self.temperature}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"loss.beta must be in [0, 1], not {self.beta}")
        if not 0.0 <= self.on_policy_fraction <= 1.0:
            raise ValueError(f"loss.on_policy_fraction must be in [0, 1], not {self.on_policy_fraction}")
        if self.kd_weight < 0 or self.sft_weight < 0 or self.end_weight < 0:
            raise ValueError("loss.kd_weight, loss.sft_weight and loss.end_weight must be >= 0")
        if self.name != "sft" and self.kd_weight == 0 and self.sft_weight == 0:
            raise ValueError("loss.kd_weight and loss.sft_weight are both 0: nothing to train on")
        if self.on_policy_fraction > 0 and self.name in ("sft", "topk_kl"):
            raise ValueError("loss.on_policy_fraction needs an online teacher loss (forward_kl, reverse_kl or jsd)")


@dataclass
class TrainConfig:
    """One distillation run."""

    data: str = field(
        default="runs/demo/teacher/records.jsonl",
        metadata={"help": "data_gen output: a records.jsonl of teacher answers, or the directory holding it"},
    )
    output_dir: str = field(default="runs/train/default", metadata={"help": "checkpoints, final model and report"})
    teacher: str | None = field(
        default=None,
        metadata={"help": "teacher for logit KD: model config name, ragroute:NAME, hub id or directory"},
    )
    student: StudentConfig = field(default_factory=StudentConfig, metadata={"help": "the student to train"})
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA / QLoRA settings"})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "the training objective"})
    # data
    max_length: int = field(default=1024, metadata={"help": "longest prompt + answer in tokens"})
    too_long: str = field(
        default="truncate",
        metadata={"help": "what to do with longer examples: truncate (cut the answer's tail) or drop; both counted"},
    )
    max_records: int | None = field(default=None, metadata={"help": "use only the first N records (smoke runs)"})
    keep_unfinished: bool = field(
        default=False,
        metadata={"help": "also train on teacher answers cut at max_tokens (finish_reason length); by default they "
                  "are skipped and counted: the teacher never ended them (often a loop), so they would teach the "
                  "student to go on past where the teacher stops"},
    )
    eval_fraction: float = field(default=0.1, metadata={"help": "share of records held out for the eval loss"})
    packing: bool = field(default=False, metadata={"help": "pack several examples per row (not with topk_kl)"})
    # optimisation
    num_epochs: float = field(default=1.0, metadata={"help": "passes over the training split"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: use num_epochs)"})
    per_device_batch_size: int = field(default=4, metadata={"help": "examples per device per micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate (LoRA wants ~1e-4..2e-4)"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name: cosine, linear, constant"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of steps with linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    optim: str = field(
        default="auto", metadata={"help": "transformers optimizer name; auto = adamw_torch_fused on CUDA, else adamw_torch"}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "compute dtype: auto (bf16 where the GPU/CPU has it, else float32), bfloat16, float32"},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations to save memory"})
    use_liger_kernel: bool = field(
        default=False,
        metadata={
            "help": "Liger Triton kernels for RMSNorm, RoPE and SwiGLU (needs CUDA and the liger-kernel package, "
            "extra train-gpu); the LM head stays TRL's fused chunked one"
        },
    )
    torch_compile: bool = field(
        default=False, metadata={"help": "torch.compile the model (inductor) before training; first steps are slower"}
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "attention kernel: sdpa, eager, flash_attention_2 (if installed)"}
    )
    # bookkeeping
    logging_steps: int = field(default=1, metadata={"help": "log the loss every N steps"})
    eval_steps: int | None = field(default=None, metadata={"help": "also evaluate every N steps (default: at the end)"})
    save_steps: int = field(
        default=50,
        metadata={"help": "write a resumable checkpoint every N steps and at the end (0: none, only the final model)"},
    )
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept on disk"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    seed: int = field(default=0, metadata={"help": "seed for the split, shuffling, init and sampling"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "dataloader worker processes"})

    def __post_init__(self) -> None:
        if self.too_long not in TOO_LONG_POLICIES:
            raise ValueError(f"too_long must be one of {', '.join(TOO_LONG_POLICIES)}, not '{self.too_long}'")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, not {self.max_length}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), not {self.eval_fraction}")
        if self.per_device_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("per_device_batch_size and gradient_accumulation_steps must be >= 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 or >= 1, not {self.max_steps}")
        if self.num_epochs <= 0:
            raise ValueError(f"num_epochs must be > 0, not {self.num_epochs}")
        if self.loss.name in ("forward_kl", "reverse_kl", "jsd") and not self.teacher:
            raise ValueError(f"loss '{self.loss.name}' needs an online teacher: set teacher")
        if self.loss.name == "topk_kl" and self.packing:
            raise ValueError("packing is not supported with loss topk_kl (the top-k rows follow each example)")
        if self.save_steps < 0 or self.logging_steps < 1:
            raise ValueError("save_steps must be >= 0 and logging_steps >= 1")

    @property
    def needs_teacher(self) -> bool:
        return self.loss.name in ("forward_kl", "reverse_kl", "jsd")
