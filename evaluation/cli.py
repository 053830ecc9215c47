"""``ragroute eval``: teacher-only vs student-only vs routed on a QA dataset: quality, latency, report.

    ragroute eval --dataset ragroute/data/pubmedqa/pqal_dev.json --limit 100 --out runs/eval
    ragroute eval --config configs/eval/smollm2-135m_pubmedqa_v3_vs_v3.1.yaml --dataset F --out DIR

With no --config, the teacher is the offline SmolLM2 and the student and router are what `ragroute demo` made.
"""

from __future__ import annotations

import argparse

from ragroute.config import add_config_arguments, config_from_args

DEFAULT_CONFIG = "configs/eval/smollm2-135m_demo.yaml"


def cli(argv: list[str]) -> int:
    from evaluation.config import EvalConfig

    parser = argparse.ArgumentParser(
        prog="ragroute eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, EvalConfig)
    args = parser.parse_args(argv)
    # Without a config, evaluate the demo's models with the demo's CPU-sized prompts and answers.
    args.config = args.config or DEFAULT_CONFIG
    cfg = config_from_args(EvalConfig, args)
    from evaluation.main import main

    main(cfg)
    return 0
