"""Engine benchmark: the same real RAG prompts through transformers (sequential, batched) and vLLM (batched),
in float32 and bfloat16, with this machine's measured matmul rate as the roof.

    .venv/bin/python bench/engines.py --json bench/results/engines.json

Prompts: the first N PubMedQA questions with their retrieved abstracts (5 documents x 800 characters, ~1k
tokens); every answer is exactly --answer-tokens tokens (min = max tokens), so each engine does the same work.
FLOPs: 2 x parameters per prompt or answer token (attention's share is small at 1k tokens on a 135M model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ragroute.config import shared_pubmedqa_dev


def matmul_gflops(dtype_name: str, size: int = 2048, seconds: float = 3.0) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - started) / 1e9


def rag_prompts(dataset: str, n: int) -> list[list[dict[str, str]]]:
    from ragroute.rag.corpus import load_corpus, load_questions
    from ragroute.rag.pipeline import PipelineConfig, RAGPipeline

    questions = load_questions(dataset).items[:n]
    pipeline = RAGPipeline(PipelineConfig(final_n=5, max_chars=800), load_corpus(dataset))
    return [p.messages for p in pipeline.prepare_batch([q.question for q in questions])]


def run_config(spec, engine_cfg, prompts, sampling, sequential: bool) -> dict:
    from ragroute.engines.base import GenerationRequest, create_engine

    requests = [GenerationRequest(messages=m) for m in prompts]
    engine = create_engine(spec, engine_cfg)
    try:
        engine.generate(requests[:1], sampling)  # warm-up (kernels, caches)
        started = time.perf_counter()
        if sequential:
            results = [engine.generate([r], sampling)[0] for r in requests]
        else:
            results = engine.generate(requests, sampling)
        wall = time.perf_counter() - started
    finally:
        engine.close()
    prompt_tokens = sum(r.prompt_tokens for r in results)
    output_tokens = sum(r.completion_tokens for r in results)
    ttfts = [r.ttft_s for r in results if r.ttft_s is not None]
    return {
        "wall_s": wall,
        "questions_per_min": 60 * len(results) / wall,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "tokens_per_s": (prompt_tokens + output_tokens) / wall,
        "output_tokens_per_s": output_tokens / wall,
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default=str(shared_pubmedqa_dev()), help="PubMedQA-format file (default: the bundled dev set)")
    parser.add_argument("--model-config", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=32, help="prompts")
    parser.add_argument("--answer-tokens", type=int, default=100)
    parser.add_argument(
        "--batch-size", type=int, default=8, help="transformers batched: prompts per generate()"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    from ragroute.engines.base import EngineConfig, SamplingConfig
    from ragroute.models import load_causal_lm, load_model_spec

    spec = load_model_spec(args.model_config)
    params = load_causal_lm(spec.path, dtype="float32").num_parameters()
    prompts = rag_prompts(args.dataset, args.n)
    sampling = SamplingConfig(max_tokens=args.answer_tokens, min_tokens=args.answer_tokens)
    roofs = {dtype: matmul_gflops(dtype) for dtype in args.dtypes.split(",")}
    print(f"matmul GFLOP/s: {roofs}", flush=True)
    configs = {}
    for dtype in roofs:
        spec.dtype = dtype
        plan = [
            (f"transformers_seq_{dtype}", EngineConfig.of("transformers", batch_size=1), True),
            (
                f"transformers_batch{args.batch_size}_{dtype}",
                EngineConfig.of("transformers", batch_size=args.batch_size),
                False,
            ),
            (f"vllm_batch_{dtype}", EngineConfig(name="vllm"), False),
        ]
        for name, engine_cfg, sequential in plan:
            result = run_config(spec, engine_cfg, prompts, sampling, sequential)
            result["dtype"] = dtype
            result["roof_fraction"] = 2 * params * result["tokens_per_s"] / 1e9 / roofs[dtype]
            configs[name] = result
            print(
                name,
                json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}),
                flush=True,
            )

    def best(prefix: str) -> float:
        return max(v["questions_per_min"] for k, v in configs.items() if k.startswith(prefix))

    best_name = max(configs, key=lambda k: configs[k]["questions_per_min"])
    summary = {
        "model": spec.name,
        "parameters": params,
        "n_prompts": len(prompts),
        "answer_tokens": args.answer_tokens,
        "matmul_gflops": roofs.get("float32"),
        "matmul_gflops_by_dtype": roofs,
        "transformers_seq_q_per_min": best("transformers_seq"),
        "transformers_batch_q_per_min": best("transformers_batch"),
        "vllm_batch_q_per_min": best("vllm_batch"),
        "speedup_vllm_vs_seq": best("vllm_batch") / best("transformers_seq"),
        "best_roof_fraction": max(v["roof_fraction"] for v in configs.values()),
        "best_config": best_name,
        "configs": configs,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "configs"}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
