"""``ragroute generate``: answer one question with one model and engine, and show what it cost."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field

from ragroute.config import add_config_arguments, config_from_args
from ragroute.engines.base import EngineConfig, GenerationRequest, SamplingConfig


@dataclass
class GenerateConfig:
    model_config: str = field(
        default="smollm2-135m", metadata={"help": "model config name in configs/models or a model YAML path"}
    )
    system: str = field(
        default="You are a biomedical expert. Answer concisely and accurately.",
        metadata={"help": "system message sent before the question"},
    )
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


def main(cfg: GenerateConfig, question: str) -> dict:
    from ragroute.engines.base import create_engine
    from ragroute.models import load_model_spec

    spec = load_model_spec(cfg.model_config)
    messages = [{"role": "system", "content": cfg.system}, {"role": "user", "content": question}]
    with create_engine(spec, cfg.engine) as engine:
        [result] = engine.generate([GenerationRequest(messages=messages)], cfg.sampling)
    figures = asdict(result)
    figures.pop("token_ids")
    figures.pop("logprobs")
    figures["output_tokens_per_s"] = result.completion_tokens / result.total_s if result.total_s else None
    figures.update(model=spec.name, engine=cfg.engine.name)
    return figures


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ragroute generate", description=__doc__)
    parser.add_argument("question", help="the question to answer")
    parser.add_argument("--engine", dest="cfg:engine.name", metavar="NAME", help="vllm, openai or transformers")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_config_arguments(parser, GenerateConfig)
    args = parser.parse_args(argv)
    from ragroute.errors import UserError

    if not args.question.strip():
        raise UserError("the question is empty")
    cfg = config_from_args(GenerateConfig, args)
    figures = main(cfg, args.question)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(figures["text"].strip())
    ttft = figures["ttft_s"]
    print(
        f"\n[{figures['model']} via {figures['engine']}] prompt {figures['prompt_tokens']} tok, "
        f"answer {figures['completion_tokens']} tok ({figures['finish_reason']}), "
        f"TTFT {'n/a' if ttft is None else f'{ttft:.2f}s'}, total {figures['total_s']:.2f}s, "
        f"{figures['output_tokens_per_s'] or 0:.1f} tok/s"
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(cli(sys.argv[1:]))
