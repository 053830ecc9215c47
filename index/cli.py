"""``ragroute corpus``: the corpus store that indexes and prompts read documents from.

    ragroute corpus build --input pubmed25n*.xml.gz --out STORE     # or JSONL / PubMedQA JSON / Parquet / Arrow
    ragroute corpus update --store STORE --input pubmed25n1275.xml.gz
    ragroute corpus info STORE
"""

from __future__ import annotations

import argparse
import json

from ragroute.config import ConfigError


def _parser(prog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)


def _config(cls: type, **values: object) -> object:
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def corpus_cli(argv: list[str]) -> int:
    parser = _parser("ragroute corpus")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="stream input files into a new store directory")
    build.add_argument("--input", nargs="+", required=True, metavar="FILE", help="input files (see above)")
    build.add_argument("--out", required=True, help="the store directory to create")
    update = sub.add_parser("update", help="add, replace and delete documents of an existing store")
    update.add_argument("--store", required=True, help="the store directory")
    update.add_argument("--input", nargs="+", required=True, metavar="FILE", help="new input files")
    info = sub.add_parser("info", help="print a store's counts, fingerprint, problems and history")
    info.add_argument("store", help="the store directory")
    args = parser.parse_args(argv)
    from index import config, main

    if args.action == "build":
        manifest = main.corpus_build_main(_config(config.CorpusBuildConfig, inputs=args.input, out=args.out))
    elif args.action == "update":
        manifest = main.corpus_update_main(_config(config.CorpusUpdateConfig, store=args.store, inputs=args.input))
    else:
        from ragroute.rag.store import read_manifest

        manifest = read_manifest(args.store)
    print(json.dumps(main.corpus_summary(manifest), indent=2))
    return 0
