"""``ragroute data-gen``: answer a questions file with one model through the RAG pipeline.

    ragroute data-gen --config configs/data_gen/smollm2-135m_demo_teacher.yaml --questions Q --out DIR
    ragroute data-gen --config ... --shard 0/4 ...   # one of 4 workers (one per GPU or node)
    ragroute data-gen merge DIR                      # join the shards into DIR/records.jsonl
"""

from __future__ import annotations

import argparse

from ragroute.config import add_config_arguments, config_from_args


def cli(argv: list[str]) -> int:
    if argv and argv[0] == "merge":
        parser = argparse.ArgumentParser(prog="ragroute data-gen merge", description="merge shard outputs")
        parser.add_argument("out", help="the --out directory the shards wrote to")
        args = parser.parse_args(argv[1:])
        from data_gen.merge import merge_shards

        counts = merge_shards(args.out)
        print(f"merged {counts['records']} records into {args.out}/records.jsonl")
        return 0
    from data_gen.config import DataGenConfig

    parser = argparse.ArgumentParser(
        prog="ragroute data-gen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, DataGenConfig)
    args = parser.parse_args(argv)
    cfg = config_from_args(DataGenConfig, args)
    from data_gen.main import main

    main(cfg)
    return 0
