"""``ragroute train`` and ``accelerate launch -m train``: one entry, every config field a ``--flag``."""

from __future__ import annotations

import argparse

from ragroute.config import add_config_arguments, config_from_args
from train.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragroute train",
        description="Distill a student from teacher records: SFT on the teacher's answers (sequence-level KD) or "
        "logit KD (forward/reverse KL, JSD) against an online teacher or its stored top-k logprobs. Multi-GPU: "
        "accelerate launch --config_file configs/accelerate/<setup>.yaml -m train --config <run>.yaml",
    )
    add_config_arguments(parser, TrainConfig)
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(TrainConfig, args)
    from train.main import main

    try:
        main(cfg)
    finally:
        end_process_group()
    return 0


def end_process_group() -> None:
    """Leave the distributed process group (``accelerate launch`` with several processes): torch warns of leaked
    NCCL resources when a process exits inside one."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
