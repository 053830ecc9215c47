"""The kernel options (use_liger_kernel, torch_compile) reach the training arguments, and Liger fails clearly where
it cannot run (no liger-kernel package, or no CUDA GPU)."""

from __future__ import annotations

import pytest

import train.trainer as trainer_mod
from ragroute.config import load_config
from ragroute.errors import UserError
from train.config import TrainConfig


def _cfg(tmp_path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"output_dir={tmp_path}", *overrides])


def test_kernel_flags_are_off_by_default(tmp_path):
    args = trainer_mod.training_arguments(_cfg(tmp_path), "float32", has_eval=False)
    assert args.use_liger_kernel is False
    assert args.torch_compile is False


def test_kernel_flags_reach_the_training_arguments(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "_check_kernels", lambda cfg: None)
    cfg = _cfg(tmp_path, "use_liger_kernel=true", "torch_compile=true")
    args = trainer_mod.training_arguments(cfg, "float32", has_eval=False)
    assert args.use_liger_kernel is True
    assert args.torch_compile is True


def test_liger_without_its_package_is_a_user_error(tmp_path, monkeypatch):
    import transformers.utils

    monkeypatch.setattr(trainer_mod.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.utils, "is_liger_kernel_available", lambda: False)
    with pytest.raises(UserError, match="liger-kernel"):
        trainer_mod.training_arguments(_cfg(tmp_path, "use_liger_kernel=true"), "float32", has_eval=False)


def test_liger_without_a_gpu_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod.torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA"):
        trainer_mod.training_arguments(_cfg(tmp_path, "use_liger_kernel=true"), "float32", has_eval=False)
