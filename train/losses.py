"""Distillation losses computed from hidden states and LM-head weights, never from full-length logits.

Every loss here sees only the answer positions (``N`` of them, selected before the head), and projects them to the
vocabulary in tiles, so neither model's ``[batch, seq, vocab]`` logits ever exist; in float32 at seq 2048 and the
152k Qwen vocabulary those would be 1.2 GB per sequence per model.

* online teacher (``forward_kl``, ``reverse_kl``, ``jsd``): TRL's ``ChunkedDivergenceFunction`` (the kernel behind
  its ``DistillationTrainer``), the generalized JSD of Agarwal et al. (2024) with ``beta`` 0 = forward
  KL(teacher || student), 1 = reverse KL(student || teacher);
* offline teacher (``topk_kl``): a sparse forward KL over the k tokens whose logprobs data_gen stored. The teacher
  distribution is renormalized over its top-k (``q_i = softmax(lp_i / T)`` over those k), the student's
  log-probabilities are the full-vocabulary ``log_softmax`` gathered at the same ids. Approximation: the teacher
  mass outside its top-k (typically a few percent at k=20) is treated as zero, so the student is pushed to put
  no mass there either; the gradient matches the full KL's on the top-k tokens up to that renormalization.

Teacher and student must share a tokenizer. Models whose embedding matrices were padded to different sizes
(Qwen2.5-7B: 152064 rows, 1.5B/3B: 151936; both tokenizers have 151665 tokens) are compared on the common rows:
the padding rows are never produced by the tokenizer, so slicing both heads to the shared size loses nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from ragroute.registry import Registry
from train.config import LossConfig

# Answer positions per projection tile in the top-k loss: [chunk, vocab] float32 logits live one tile at a time.
TOPK_TOKEN_CHUNK = 1024


@dataclass
class Head:
    """One model's view of the answer positions: hidden states ``[N, H]`` and its LM head."""

    hidden: torch.Tensor
    weight: torch.Tensor  # [V, H]
    bias: torch.Tensor | None = None


class KDLoss(ABC):
    """A per-token distillation divergence between the student and a teacher signal."""

    needs_teacher: bool = True

    @abstractmethod
    def per_token(self, student: Head, teacher: Head | None, batch: dict[str, Any]) -> torch.Tensor:
        """Divergence of each of the ``N`` answer positions, shape ``[N]`` (gradient flows to the student)."""


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else t.dtype


class GeneralizedJSD(KDLoss):
    """Forward KL (beta=0), reverse KL (beta=1) or generalized JSD against the online teacher, at a temperature."""

    def __init__(self, beta: float, temperature: float = 1.0) -> None:
        self.beta = beta
        self.temperature = temperature

    def per_token(self, student: Head, teacher: Head | None, batch: dict[str, Any]) -> torch.Tensor:
        from trl.kernels.chunked_divergence import ChunkedDivergenceFunction

        if teacher is None:
            raise ValueError("GeneralizedJSD needs the teacher's hidden states")
        s_weight, s_bias = _full(student.weight), _full(student.bias)
        t_weight, t_bias = _full(teacher.weight), _full(teacher.bias)
        # The kernel walks the student's rows and reads the same rows of the teacher, so a teacher padded to more
        # rows (Qwen2.5-7B) needs no slicing; that keeps ZeRO-3 parameters whole for its gather-on-access.
        s_rows, t_rows = _rows(s_weight), _rows(t_weight)
        if s_rows > t_rows:
            s_weight = s_weight[:t_rows]
            s_bias = s_bias[:t_rows] if s_bias is not None else None
        divergence, _entropy = ChunkedDivergenceFunction.apply(
            student.hidden,
            s_weight,
            s_bias,
            teacher.hidden.to(student.hidden.device),
            t_weight,
            t_bias,
            self.beta,
            self.temperature,
        )
        return divergence


def _rows(weight: torch.Tensor) -> int:
    """Vocabulary rows of an LM head (ZeRO-3 keeps the real shape in ``ds_shape``)."""
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def _full(t: torch.Tensor | None) -> torch.Tensor | None:
    """An FSDP2 DTensor gathered once into a plain tensor (else the chunk loop would re-gather per tile)."""
    if t is not None and isinstance(t, torch.distributed.tensor.DTensor):
        return t.full_tensor()
    return t


def _topk_chunk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    inv_t: float,
) -> torch.Tensor:
    dtype = _compute_dtype(hidden)
    logits = (hidden.to(dtype) @ weight.to(dtype).t()).float()
    if bias is not None:
        logits = logits + bias.float()
    logits = logits * inv_t
    student_logp = logits.gather(-1, topk_ids) - torch.logsumexp(logits, dim=-1, keepdim=True)
    teacher_logq = torch.log_softmax(topk_logprobs.float() * inv_t, dim=-1)
    return (teacher_logq.exp() * (teacher_logq - student_logp)).sum(-1)


class TopKKL(KDLoss):
    """Sparse forward KL against the teacher's stored top-k logprobs (no teacher model loaded)."""

    needs_teacher = False

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def per_token(self, student: Head, teacher: Head | None, batch: dict[str, Any]) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        from train.data import TOPK_PAD_LOGPROB

        topk_ids, topk_logprobs = batch["topk_ids"], batch["topk_logprobs"]
        if topk_ids.shape[0] != student.hidden.shape[0]:
            raise ValueError(
                f"{topk_ids.shape[0]} top-k rows for {student.hidden.shape[0]} answer positions: "
                "the teacher's token ids do not line up with the training labels"
            )
        weight, bias = _full(student.weight), _full(student.bias)
        # A teacher padded to more rows than the student (Qwen2.5-7B: 152064, 1.5B: 151936) can rank a padding row
        # in its stored top-k: the student has no such token, so that entry carries no teacher mass.
        outside = topk_ids >= _rows(weight)
        topk_ids = topk_ids.masked_fill(outside, 0)
        topk_logprobs = topk_logprobs.masked_fill(outside, TOPK_PAD_LOGPROB)
        # Positions without stored logprobs (the end-of-turn tokens, truncated rows) carry no teacher signal.
        has_row = topk_logprobs.max(dim=-1).values > TOPK_PAD_LOGPROB / 2
        if hasattr(weight, "ds_id"):
            raise ValueError("loss topk_kl does not support DeepSpeed ZeRO-3 yet: use DDP or FSDP")
        out = []
        for start in range(0, student.hidden.shape[0], TOPK_TOKEN_CHUNK):
            sl = slice(start, start + TOPK_TOKEN_CHUNK)
            # Recomputed in backward, so only one [chunk, vocab] tile is alive at a time.
            out.append(
                checkpoint(
                    _topk_chunk,
                    student.hidden[sl],
                    weight,
                    bias,
                    topk_ids[sl],
                    topk_logprobs[sl],
                    1.0 / self.temperature,
                    use_reentrant=False,
                )
            )
        per_token = torch.cat(out) if out else student.hidden.new_zeros(0, dtype=torch.float32)
        return per_token * has_row


def cross_entropy_per_token(student: Head, targets: torch.Tensor) -> torch.Tensor:
    """``-log p(target)`` of each answer position, through TRL's chunked log-prob kernel."""
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    weight, bias = _full(student.weight), _full(student.bias)
    with maybe_gather_lm_head_ctx(weight, bias):
        log_probs = ChunkedLogProbFunction.apply(student.hidden, weight, bias, targets, 1.0, 32768, None, 1.0, ())[0]
    return -log_probs


# name -> factory(LossConfig). "sft" has no KD term: SFTTrainer's own fused cross-entropy runs.
KD_LOSSES: Registry[Any] = Registry("distillation loss", {
    "forward_kl": lambda cfg: GeneralizedJSD(0.0, cfg.temperature),
    "reverse_kl": lambda cfg: GeneralizedJSD(1.0, cfg.temperature),
    "jsd": lambda cfg: GeneralizedJSD(cfg.beta, cfg.temperature),
    "topk_kl": lambda cfg: TopKKL(cfg.temperature),
})


def make_kd_loss(cfg: LossConfig) -> KDLoss | None:
    if cfg.name == "sft":
        return None
    return KD_LOSSES[cfg.name](cfg)
