"""``ragroute serve``: every ServeConfig field is a --flag; --host/--port are the usual shorthands."""

from __future__ import annotations

import argparse

from ragroute.config import add_config_arguments, config_from_args
from serve.config import ServeConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragroute serve",
        description="Start the routed inference API: POST /v1/answer, POST /v1/chat/completions (OpenAI-compatible), "
        "GET /health, /ready, /metrics.",
    )
    add_config_arguments(parser, ServeConfig)  # includes --host and --port (ServeConfig fields)
    return parser


def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(ServeConfig, args)
    from serve.main import main

    return main(cfg)
