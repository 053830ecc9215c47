"""``ragroute corpus``: the corpus store that indexes and prompts read documents from.

    ragroute corpus build --input pubmed25n*.xml.gz --out STORE --workers 8   # or JSONL / PubMedQA JSON / Parquet / Arrow
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
    build.add_argument("--workers", type=int, default=1, help="input files written at once, one process each")
    update = sub.add_parser("update", help="add, replace and delete documents of an existing store")
    update.add_argument("--store", required=True, help="the store directory")
    update.add_argument("--input", nargs="+", required=True, metavar="FILE", help="new input files")
    info = sub.add_parser("info", help="print a store's counts, fingerprint, problems and history")
    info.add_argument("store", help="the store directory")
    args = parser.parse_args(argv)
    from index import config, main

    if args.action == "build":
        manifest = main.corpus_build_main(
            _config(config.CorpusBuildConfig, inputs=args.input, out=args.out, workers=args.workers))
    elif args.action == "update":
        manifest = main.corpus_update_main(_config(config.CorpusUpdateConfig, store=args.store, inputs=args.input))
    else:
        from ragroute.rag.store import read_manifest

        manifest = read_manifest(args.store)
    print(json.dumps(main.corpus_summary(manifest), indent=2))
    return 0


INDEX_USAGE = """\
    ragroute index build --store STORE --out INDEX [--config configs/index/<run>.yaml] [--executor ray] [--factory ...]
    ragroute index update --store STORE --index INDEX [--input NEWFILES...]
"""


def index_cli(argv: list[str]) -> int:
    """``ragroute index build|update``: the sparse (tantivy) and dense (FAISS) indexes of a corpus store."""
    from ragroute.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(prog="ragroute index", description=f"{index_cli.__doc__}\n\n{INDEX_USAGE}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build (or resume building) the indexes of a store")
    build.add_argument("--store", required=True, help="the corpus store directory (`ragroute corpus build`)")
    build.add_argument("--out", required=True, help="the index directory (an unfinished build there is resumed)")
    from index.config import IndexConfig

    add_config_arguments(build, IndexConfig)
    update = sub.add_parser("update", help="apply update files to the store, then add/delete in the indexes")
    update.add_argument("--store", required=True, help="the corpus store directory the index was built from")
    update.add_argument("--index", required=True, help="the index directory")
    update.add_argument("--input", nargs="*", default=[], metavar="FILE",
                        help="update files (none: only bring the index up to the store, e.g. after an interruption)")
    update.add_argument("--executor", choices=("local", "ray"), default="local", help="where embeddings are computed")
    args = parser.parse_args(argv)
    from index.index_build import build_index, update_index

    if args.action == "build":
        manifest = build_index(args.store, args.out, config_from_args(IndexConfig, args))
    else:
        manifest = update_index(args.store, args.index, args.input, args.executor)
    summary = {k: manifest[k] for k in ("store_fingerprint", "store_rows_indexed", "sparse", "dense")}
    print(json.dumps(summary | {"last": manifest["history"][-1]}, indent=2))
    return 0
