"""Shared fixtures: a tiny random-init Llama with the real SmolLM2 tokenizer, the bundled PubMedQA file, paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragroute.config import shared_pubmedqa_dev


@pytest.fixture(scope="session")
def pqal_dev_path() -> Path:
    """The 500 expert-labelled PubMedQA questions shipped in the package (``$RAGROUTE_PQAL_DEV`` overrides)."""
    path = shared_pubmedqa_dev()
    if not path.exists():
        pytest.fail(f"PubMedQA dev set missing: {path} (RAGROUTE_PQAL_DEV names a file that does not exist?)")
    return path


@pytest.fixture(scope="session")
def teacher_dir() -> Path:
    """The converted SmolLM2-135M-Instruct checkpoint (made by `ragroute models prepare`, the setup command)."""
    from ragroute.models import resolve_model_path

    return Path(resolve_model_path("ragroute:smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def student_dir() -> Path:
    """The pruned SmolLM2 student checkpoint (made by `ragroute models prepare`)."""
    from ragroute.models import resolve_model_path

    return Path(resolve_model_path("ragroute:smollm2-135m-pruned"))


def make_tiny_llama(out_dir: Path, tokenizer_dir: Path, num_layers: int = 2, seed: int = 0) -> Path:
    """A random-init Llama small enough for unit tests (~3.5M params, the embedding dominates) saved with
    the real SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, teacher_dir: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), teacher_dir)


@pytest.fixture(scope="session")
def tiny_model_spec(tiny_model_dir: Path):
    from ragroute.models import ModelSpec

    return ModelSpec(name="tiny-llama", path=str(tiny_model_dir), dtype="float32", max_model_len=2048)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a model hub (none exists here); make that explicit so failures are fast."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", os.environ.get("TOKENIZERS_PARALLELISM", "false"))


@pytest.fixture(scope="session")
def teacher_spec(teacher_dir: Path):
    from ragroute.models import load_model_spec

    return load_model_spec("smollm2-135m")


def prob_tolerance(dtype: str) -> float:
    """How far apart two runs of one model may put a token probability when their batch shapes, kernels or
    engines differ: the engines promise the same model, not the same rounding. float32 rounds at 2**-24, so
    1e-3 leaves room for the summation order of 30 layers; bfloat16 keeps 8 bits of mantissa (2**-9 relative
    per rounding), and through SmolLM2's 30 layers one prompt's verdict probabilities moved by up to ~0.03
    between engines and batch shapes on an AMX CPU (0.289 vs 0.304 server vs offline vLLM; vLLM vs
    transformers ~0.03)."""
    return 1e-3 if dtype == "float32" else 0.05


@pytest.fixture(scope="session")
def teacher_dtype(teacher_spec) -> str:
    """The dtype the teacher runs in here (``auto``: bfloat16 on CPUs with AVX512-BF16/AMX, else float32;
    ``RAGROUTE_CPU_BF16=0|1`` mimics either CPU)."""
    from ragroute.hardware import pick_dtype

    return pick_dtype(teacher_spec.dtype)


@pytest.fixture(scope="session")
def same_teacher_verdict(teacher_dtype):
    """``same_teacher_verdict(a, b)``: two verdict-first answers of the teacher (``.verdict``,
    ``.verdict_probs``) agree as far as its dtype allows: probabilities within :func:`prob_tolerance`, and the
    same verdict unless ``a``'s two most likely verdicts are closer than twice that (rounding may pick either)."""
    tolerance = prob_tolerance(teacher_dtype)

    def check(a, b) -> None:
        assert a.verdict_probs == pytest.approx(b.verdict_probs, abs=tolerance), teacher_dtype
        first, second = sorted(a.verdict_probs.values(), reverse=True)[:2]
        if first - second > 2 * tolerance:
            assert a.verdict == b.verdict, (a.verdict_probs, b.verdict_probs)

    return check


@pytest.fixture(scope="session")
def vllm_teacher(teacher_spec):
    """One real vLLM engine (CPU build, eager) on the converted SmolLM2 teacher, shared by the slow tests."""
    from ragroute.engines.base import EngineConfig, create_engine

    engine = create_engine(teacher_spec, EngineConfig.of("vllm", kv_cache_memory_gb=0.5))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def make_tiny_model(teacher_dir: Path):
    """Factory: ``make_tiny_model(out_dir, num_layers=2, seed=0)`` writes another tiny random Llama."""

    def make(out_dir: Path, num_layers: int = 2, seed: int = 0) -> Path:
        return make_tiny_llama(out_dir, teacher_dir, num_layers=num_layers, seed=seed)

    return make
