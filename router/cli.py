"""`ragroute router fit|fit-cascade|eval|predict|hard-set`.

Only argparse and the config dataclasses are imported here; scikit-learn and skops load when a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ragroute.config import add_config_arguments, config_from_args
from ragroute.errors import UserError
from router.config import RouterConfig


def _records_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--teacher", required=required, metavar="RECORDS", help="teacher records (data_gen JSONL or dir)")
    parser.add_argument("--student", required=required, metavar="RECORDS", help="student records of the same questions")


def _trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust", action="append", default=[], metavar="TYPE",
        help="also load this type from the router file, after reviewing it (e.g. sklearn.tree._tree.Tree for a "
        "gboost router you fitted); repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragroute router", description="Fit, evaluate and use the router that sends hard questions to the teacher."
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    fit = sub.add_parser("fit", help="label paired records, fit a router, save it (skops)")
    _records_arguments(fit)
    fit.add_argument("--out", required=True, help="router file to write, e.g. runs/router.skops")
    add_config_arguments(fit, RouterConfig)

    cascade = sub.add_parser("fit-cascade", help="fit the cascade rule on verdict-first records; JSON for serve/eval")
    _records_arguments(cascade)
    cascade.add_argument("--out", required=True, help="rule file to write, e.g. runs/cascade.json")
    add_config_arguments(cascade, RouterConfig)

    ev = sub.add_parser("eval", help="RouteLLM metrics (APGR, CPT) of routers and baselines; JSON + plot")
    _records_arguments(ev)
    ev.add_argument("--out", required=True, help="directory for router_eval.json and router_curve.png")
    ev.add_argument("--router", help="evaluate this router file (default: fit the config's models out-of-fold)")
    _trust_argument(ev)
    add_config_arguments(ev, RouterConfig)

    predict = sub.add_parser("predict", help="route questions with a router file (JSON lines out)")
    predict.add_argument("--router", required=True, help="router file from `ragroute router fit`")
    predict.add_argument("questions", nargs="*", help="questions to route")
    predict.add_argument("--questions", dest="questions_file", help="question file (JSONL/PubMedQA json, or .txt lines)")
    predict.add_argument("--signals", help='retrieval signals as JSON, e.g. \'{"top_score": 12.3, "margin": 2.1}\'')
    _trust_argument(predict)

    hard = sub.add_parser("hard-set", help="export the hard questions as a data_gen question file (the curriculum)")
    hard.add_argument("--router", required=True, help="router file from `ragroute router fit`")
    _records_arguments(hard, required=False)
    hard.add_argument("--questions", dest="questions_file", help="question file to score instead of records")
    hard.add_argument("--out", required=True, help="JSONL file to write")
    _trust_argument(hard)
    return parser


def _config_given(args: argparse.Namespace) -> bool:
    return args.config is not None or any(k.startswith("cfg:") and v is not None for k, v in vars(args).items())


def _read_questions(path: str) -> list[str]:
    p = Path(path)
    if p.suffix == ".txt":
        if not p.is_file():
            raise UserError(f"questions file not found: {path}")
        return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    from ragroute.rag.corpus import load_questions

    return [item.question for item in load_questions(path).items]


def _parse_signals(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    try:
        signals = json.loads(text)
        return {str(k): float(v) for k, v in signals.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise UserError(f"--signals must be a JSON object of numbers, not {text!r}") from None


def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from router import main

    if args.action == "fit":
        main.fit_main(config_from_args(RouterConfig, args), args.teacher, args.student, args.out)
    elif args.action == "fit-cascade":
        main.fit_cascade_main(config_from_args(RouterConfig, args), args.teacher, args.student, args.out)
    elif args.action == "eval":
        if args.router and _config_given(args):
            raise UserError("eval --router uses the config stored in the router file; drop --config and overrides")
        cfg = None if args.router else config_from_args(RouterConfig, args)
        main.eval_main(cfg, args.teacher, args.student, args.out, args.router, args.trust)
    elif args.action == "predict":
        questions = list(args.questions) + (_read_questions(args.questions_file) if args.questions_file else [])
        if not questions:
            raise UserError("no questions: give them as arguments or with --questions FILE")
        for row in main.predict_main(args.router, questions, _parse_signals(args.signals), args.trust):
            print(json.dumps(row, ensure_ascii=False))
    elif args.action == "hard-set":
        if bool(args.teacher) != bool(args.student):
            raise UserError("give both --teacher and --student records, or --questions")
        if not args.teacher and not args.questions_file:
            raise UserError("give --teacher and --student records, or --questions FILE")
        main.hard_set_main(args.router, args.out, args.teacher, args.student, args.questions_file, args.trust)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
