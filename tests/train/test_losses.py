"""The KD losses on real (tiny) models: zero for identical models, shared-vocabulary slicing, top-k vs full KL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ragroute.errors import UserError
from train.config import LossConfig
from train.losses import GeneralizedJSD, Head, TopKKL, cross_entropy_per_token, make_kd_loss
from train.student_init import shared_vocab_size


def _heads(model_dir: Path, n_tokens: int = 12, seed: int = 0) -> tuple[Head, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.randint(0, 1000, (1, n_tokens), generator=torch.Generator().manual_seed(seed))
    hidden = model.model(input_ids=ids).last_hidden_state[0]
    return Head(hidden, model.lm_head.weight, model.lm_head.bias), ids[0]


@pytest.fixture(scope="module")
def student(tiny_student_dir: Path) -> Head:
    return _heads(tiny_student_dir)[0]


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path) -> Head:
    head, _ = _heads(tiny_model_dir)
    return Head(head.hidden.detach(), head.weight.detach())


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
def test_kd_is_zero_when_student_equals_teacher(name: str, teacher: Head):
    loss = make_kd_loss(LossConfig(name=name, beta=0.5))
    per_token = loss.per_token(teacher, teacher, {})
    if name == "jsd":  # log of the mixture (p/2 + p/2) rounds in float32
        assert per_token.abs().max().item() < 1e-6
    else:
        assert torch.count_nonzero(per_token).item() == 0


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_divergence_matches_a_dense_reference_and_trains_only_the_student(beta: float, student: Head, teacher: Head):
    # Random-init heads are near uniform; sharpen the student so the divergence is far above float32 rounding.
    student = Head(student.hidden * 40, student.weight)
    loss = GeneralizedJSD(beta, temperature=2.0).per_token(student, teacher, {})
    s_logp = torch.log_softmax((student.hidden @ student.weight.T).double() / 2.0, dim=-1)
    t_logp = torch.log_softmax((teacher.hidden @ teacher.weight.T).double() / 2.0, dim=-1)
    if beta == 0.0:
        ref = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
    elif beta == 1.0:
        ref = (s_logp.exp() * (s_logp - t_logp)).sum(-1)
    else:
        m = torch.logaddexp(s_logp + torch.log(torch.tensor(0.5)), t_logp + torch.log(torch.tensor(0.5)))
        ref = 0.5 * (t_logp.exp() * (t_logp - m)).sum(-1) + 0.5 * (s_logp.exp() * (s_logp - m)).sum(-1)
    assert torch.allclose(loss.double(), ref, rtol=1e-3, atol=1e-6), (loss, ref)
    assert (loss > 0).all()
    grad = torch.autograd.grad(loss.sum(), student.weight, retain_graph=True)[0]
    assert grad.abs().sum() > 0


def test_padded_vocabulary_uses_the_shared_rows(student: Head, teacher: Head):
    """Qwen2.5-7B pads its head to 152064 rows, the 1.5B to 151936: the extra rows never enter the loss."""
    reference = GeneralizedJSD(0.5).per_token(student, teacher, {})
    junk = torch.randn(128, teacher.weight.shape[1]) * 10  # padding rows with large logits would dominate if used
    padded_teacher = Head(teacher.hidden, torch.cat([teacher.weight, junk]))
    assert torch.allclose(GeneralizedJSD(0.5).per_token(student, padded_teacher, {}), reference, atol=1e-6)
    padded_student = Head(student.hidden, torch.cat([student.weight, junk]))
    assert torch.allclose(GeneralizedJSD(0.5).per_token(padded_student, teacher, {}), reference, atol=1e-6)


def test_shared_vocab_accepts_padding_and_rejects_another_tokenizer(teacher_dir: Path):
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    assert shared_vocab_size(tok, AutoTokenizer.from_pretrained(teacher_dir), 49152, 49280) == 49152
    other = AutoTokenizer.from_pretrained(teacher_dir)
    other.add_tokens(["<not-in-the-student-vocab>"])
    with pytest.raises(UserError, match="tokenizers differ"):
        shared_vocab_size(tok, other, 49152, 49152)
    with pytest.raises(UserError, match="embedding rows"):
        shared_vocab_size(tok, AutoTokenizer.from_pretrained(teacher_dir), 1000, 49152)


def test_topk_kl_with_the_whole_vocabulary_is_the_forward_kl(student: Head, teacher: Head):
    """With k = vocabulary the renormalization is exact: the sparse loss equals the dense forward KL."""
    t_logp = torch.log_softmax(teacher.hidden @ teacher.weight.T, dim=-1)
    top = torch.topk(t_logp, t_logp.shape[1], dim=-1)
    batch = {"topk_ids": top.indices, "topk_logprobs": top.values}
    sparse = TopKKL().per_token(student, None, batch)
    dense = GeneralizedJSD(0.0).per_token(student, teacher, {})
    assert torch.allclose(sparse, dense, rtol=1e-4, atol=1e-5)
    # Identical models: zero (up to float32 rounding of the two log-softmaxes).
    assert TopKKL().per_token(teacher, None, batch).abs().max().item() < 1e-5


def test_topk_ids_past_the_students_rows_carry_no_teacher_mass(student: Head):
    """A teacher padded to more rows than the student (Qwen2.5-7B: 152064, 1.5B: 151936) can rank a padding row in
    its stored top-k; the student has no such row: that entry counts as absent, never an index error."""
    n, rows = student.hidden.shape[0], student.weight.shape[0]
    ids = torch.randint(0, rows, (n, 4), generator=torch.Generator().manual_seed(1))
    logprobs = torch.log_softmax(torch.randn(n, 4, generator=torch.Generator().manual_seed(2)), dim=-1)
    padded_ids = torch.cat([ids, torch.full((n, 1), rows + 100)], dim=1)
    padded_logprobs = torch.cat([logprobs, torch.full((n, 1), -0.5)], dim=1)
    padded = TopKKL().per_token(student, None, {"topk_ids": padded_ids, "topk_logprobs": padded_logprobs})
    expected = TopKKL().per_token(student, None, {"topk_ids": ids, "topk_logprobs": logprobs})
    torch.testing.assert_close(padded, expected)


def test_topk_rows_without_teacher_signal_add_nothing(student: Head):
    n = student.hidden.shape[0]
    batch = {"topk_ids": torch.zeros(n, 3, dtype=torch.long), "topk_logprobs": torch.full((n, 3), -1.0e4)}
    assert torch.count_nonzero(TopKKL().per_token(student, None, batch)).item() == 0


def test_cross_entropy_matches_dense(tiny_student_dir: Path):
    head, ids = _heads(tiny_student_dir)
    ce = cross_entropy_per_token(head, ids)
    dense = torch.nn.functional.cross_entropy(head.hidden @ head.weight.T, ids, reduction="none")
    assert torch.allclose(ce, dense, rtol=1e-5, atol=1e-5)
