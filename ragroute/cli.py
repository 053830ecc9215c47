"""The ``ragroute`` console script.

Each subcommand lives in its own module and is imported only when it runs, so ``ragroute --help`` stays
instant (no torch, no vLLM). A subcommand target is ``"module:function"``; the function takes the remaining
command-line arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ragroute.errors import UserError

# name -> (target, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "models": ("ragroute.models_cli:cli", "prepare the offline default models, list model configs"),
    "generate": ("ragroute.generate:cli", "answer one question with one model and engine, with token/timing figures"),
    "verdict": ("ragroute.verdict_cli:cli", "calibrate the yes/no/maybe verdict of verdict-first answers (cross-validated)"),
    "data-gen": ("data_gen.cli:cli", "run questions through the RAG pipeline and a model; write a resumable dataset"),
    "train": ("train.cli:cli", "distill a student from teacher data (SFT and logit KD; also via accelerate launch)"),
    "router": ("router.cli:cli", "fit, evaluate and use the simple-vs-hard question router"),
    "corpus": ("index.cli:corpus_cli", "build and update the on-disk corpus store (JSONL, Parquet, PubMed XML)"),
    "index": ("index.cli:index_cli", "build and update the sparse (tantivy) and dense (FAISS) indexes of a corpus store"),
    "serve": ("serve.cli:cli", "start the routed inference API (answers + OpenAI-compatible chat)"),
    "eval": ("evaluation.cli:cli", "compare teacher-only, student-only and routed systems: quality and latency"),
    "loop": ("evaluation.loop:cli", "hard questions -> teacher data -> retrain student -> refit router, kept if better"),
    "demo": ("evaluation.demo:cli", "the whole loop on the bundled demo corpus: prepare, generate, distill, route, eval"),
}


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (pytest's capture, a redirected stream)."""

    @property
    def stream(self):  # noqa: ANN201 - logging.StreamHandler's attribute
        return sys.stdout

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(level: int = logging.INFO) -> None:
    """ragroute's messages (loggers ``ragroute.*``) as plain lines on stdout; other libraries' stay at WARNING."""
    logger = logging.getLogger("ragroute")
    logger.setLevel(level)
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragroute",
        description="Fast biomedical RAG question answering: distill a small student from a large teacher and "
        "route each question to the cheaper model that can answer it.",
        epilog="Run 'ragroute COMMAND --help' for a command's options.",
    )
    from ragroute import __version__

    parser.add_argument("--version", action="version", version=f"ragroute {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def run_subcommand(name: str, argv: Sequence[str]) -> int:
    target, _ = SUBCOMMANDS[name]
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"ragroute {name}: not built yet", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, func_name)(list(argv)) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv or ["--help"])  # prints help / version, or exits 2 on an unknown command
        return 0
    name = argv[0]
    configure_logging()
    try:
        return run_subcommand(name, argv[1:])
    except UserError as exc:
        print(f"ragroute {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ragroute {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
