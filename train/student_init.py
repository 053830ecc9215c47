"""Load the student (a checkpoint, a ragroute cache model, or a Qwen depth-pruned on the fly) and the teacher.

Why depth: single-stream decode time follows the number of layers (measured on an H200 with compiled HF generate,
3000-token prompt, batch 1: Qwen2.5-7B 7.4 ms/token, 3B with 36 layers 5.9, 1.5B with 28 layers 4.4), so dropping
decoder layers (ShortGPT block influence, ``ragroute.pruning``) buys latency that width alone does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragroute.config import CONFIG_ROOT
from ragroute.errors import UserError
from train.config import StudentConfig


@dataclass
class ModelRef:
    """A model named in a train config, resolved to something ``from_pretrained`` accepts."""

    name: str
    path: str  # local directory or hub id
    tokenizer: str | None = None  # the model YAML's stand-in tokenizer, if it names one
    # configs/models/*-shape.yaml (load_format dummy): path holds only config.json; the model is built from it with
    # random weights. Throughput and memory are real, losses and the trained model are meaningless.
    shape_only: bool = False


def resolve_model_ref(ref: str) -> ModelRef:
    """A configs/models/NAME.yaml name, a .yaml path, ``ragroute:NAME``, a hub id or a directory."""
    from ragroute.models import load_model_spec, resolve_model_path

    if ref.endswith((".yaml", ".yml")) or (CONFIG_ROOT / "models" / f"{ref}.yaml").exists():
        spec = load_model_spec(ref)
        return ModelRef(
            name=spec.name, path=resolve_model_path(spec.path), tokenizer=spec.tokenizer, shape_only=spec.shape_only
        )
    return ModelRef(name=Path(ref).name if Path(ref).exists() else ref, path=resolve_model_path(ref))


def load_tokenizer_for(ref: ModelRef):
    from ragroute.models import load_tokenizer

    tokenizer = load_tokenizer(ref.tokenizer or ref.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def shared_vocab_size(student_tok: Any, teacher_tok: Any, student_rows: int, teacher_rows: int) -> int:
    """The vocabulary both models' logits are compared over; a different tokenizer is an error.

    Embedding matrices padded to different sizes (Qwen2.5-7B 152064 rows vs 1.5B 151936) are fine: the rows past
    the tokenizer's length are never a target, so both heads are sliced to the smaller size.
    """
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise UserError(
            f"teacher and student tokenizers differ ({len(teacher_tok)} vs {len(student_tok)} tokens, different "
            "token ids): logit distillation needs a shared vocabulary; use loss sft, or a student of the teacher's family"
        )
    common = min(student_rows, teacher_rows)
    if len(student_tok) > common:
        raise UserError(f"the tokenizer has {len(student_tok)} tokens but one model has only {common} embedding rows")
    return common


def process_device() -> Any:
    """This process's accelerator device (``LOCAL_RANK`` under ``accelerate launch``), or the CPU."""
    import os

    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def build_shape_only(path: str, dtype: Any, attn: str, seed: int = 0):
    """A model of the architecture in ``path/config.json`` with random weights (transformers ``from_config``),
    built directly on this process's device (a 7B shape initialised on a CPU takes minutes). The same seed on
    every rank gives every rank the same weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    torch.manual_seed(seed)
    with process_device():
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)


def _load(ref: ModelRef, dtype: Any, attn: str, quantization_config: Any = None, seed: int = 0):
    from ragroute.models import load_causal_lm

    if ref.shape_only:
        if quantization_config is not None:
            raise UserError(f"{ref.name} is shape-only (random weights): a 4-bit base (lora.load_in_4bit) needs weights")
        return build_shape_only(ref.path, dtype, attn, seed)
    kwargs: dict[str, Any] = {"attn_implementation": attn}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    try:
        return load_causal_lm(ref.path, dtype=str(dtype).removeprefix("torch."), **kwargs)
    except ValueError as exc:
        if "attn_implementation" in str(exc) or "attention" in str(exc).lower():
            raise UserError(f"attention implementation '{attn}' is not available here: {exc}") from None
        raise


def load_student(
    cfg: StudentConfig,
    tokenizer: Any,
    weights_dtype: Any,
    attn: str,
    load_in_4bit: bool = False,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """The student model, depth-pruned if asked; returns it and a description for the report."""
    import torch

    ref = resolve_model_ref(cfg.model)
    quant = None
    if load_in_4bit:
        if not torch.cuda.is_available():
            raise UserError("lora.load_in_4bit (QLoRA) needs a CUDA GPU")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError("lora.load_in_4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes") from None
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    model = _load(ref, weights_dtype, attn, quant, seed)
    info: dict[str, Any] = {"source": ref.path, "layers_before": model.config.num_hidden_layers}
    if ref.shape_only:
        info["shape_only"] = True
    if cfg.prune_layers is not None:
        if quant is not None:
            raise UserError("student.prune_layers cannot be combined with a 4-bit base; prune first, then QLoRA")
        if cfg.prune_layers >= model.config.num_hidden_layers:
            raise UserError(
                f"student.prune_layers={cfg.prune_layers} keeps all {model.config.num_hidden_layers} layers of "
                f"{ref.path}; give fewer"
            )
        from ragroute.models import PruneSpec
        from ragroute.pruning import prune_model

        spec = PruneSpec(source=ref.path, method=cfg.prune_method, num_layers=cfg.prune_layers)
        info["pruning"] = prune_model(model, tokenizer, spec)
    info["layers"] = model.config.num_hidden_layers
    info["parameters"] = model.num_parameters()
    model.config.use_cache = False
    return model, info


def load_teacher(ref_name: str, dtype: Any, attn: str, seed: int = 0) -> tuple[Any, Any, ModelRef]:
    """The frozen teacher model and its tokenizer."""
    ref = resolve_model_ref(ref_name)
    model = _load(ref, dtype, attn, seed=seed + 1)
    model.eval()
    model.requires_grad_(False)
    model.config.use_cache = False
    return model, load_tokenizer_for(ref), ref
