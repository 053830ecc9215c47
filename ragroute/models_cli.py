"""``ragroute models``: prepare the offline default models, list the shipped model configs."""

from __future__ import annotations

import argparse

from ragroute.config import CONFIG_ROOT

# The offline SmolLM2 pair, then the offline Qwen path: Qwen2.5's tokenizer and two tiny random Qwen2 checkpoints.
DEFAULT_MODELS = ("smollm2-135m", "smollm2-135m-pruned", "qwen2.5-tokenizer", "qwen2-tiny-teacher", "qwen2-tiny-student")


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ragroute models", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    prepare = sub.add_parser(
        "prepare",
        help="convert the offline teacher from its GGUF, derive the pruned student, build Qwen2.5's tokenizer and the "
        "tiny Qwen2 checkpoints into $RAGROUTE_HOME",
    )
    prepare.add_argument(
        "models",
        nargs="*",
        default=list(DEFAULT_MODELS),
        help=f"model config names or YAML paths, in dependency order (default: {' '.join(DEFAULT_MODELS)})",
    )
    prepare.add_argument("--force", action="store_true", help="rebuild even if the checkpoint exists")
    sub.add_parser("list", help="list the model configs shipped in configs/models and whether each is ready")
    args = parser.parse_args(argv)

    from ragroute.models import load_model_spec, models_dir, prepare_model

    if args.action == "prepare":
        # Load every spec first so a typo fails before any slow conversion starts.
        specs = [load_model_spec(name) for name in args.models]
        for spec in specs:
            prepare_model(spec, force=args.force)
        print(f"models are in {models_dir()}")
        return 0

    from ragroute.errors import UserError
    from ragroute.models import resolve_model_path

    for path in sorted((CONFIG_ROOT / "models").glob("*.yaml")):
        spec = load_model_spec(str(path))
        try:
            where = resolve_model_path(spec.path)
        except UserError:
            where = "not prepared (run: ragroute models prepare)"
        if spec.shape_only:
            where = "shape only: random weights from its config.json (timing, never quality)"
        elif where == spec.path:
            where = "loaded from the hub by the engines"
        print(f"{path.stem:28s} {spec.path:40s} {where}")
    return 0
