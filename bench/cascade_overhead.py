"""Cascade escalation overhead: the student's verdict step (prefill + one constrained token) against its whole
verdict-first answer, one question at a time (single stream, what a served request pays), vLLM on this machine.

    .venv/bin/python bench/cascade_overhead.py --dataset ragroute/data/pubmedqa/pqal_dev.json --n 40 \
        --json bench/results/cascade_overhead.json

Prompts are the PubMedQA data_gen config's (same pipeline, instruction and sampling). Each question is answered once,
verdict-first, on a fresh prompt: the answer's verdict step (prefill + one constrained token, what an
escalation throws away) is timed inside the same call as the whole answer (verdict step + the explanation
continued after it, its prefill served from the prefix cache). Target: mean verdict step <= 10% of the mean
whole answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--config", default="configs/data_gen/smollm2-135m-pruned_pubmedqa_student.yaml")
    parser.add_argument("--model-config", default=None, help="student model (default: the config's)")
    parser.add_argument("--json")
    args = parser.parse_args()

    from data_gen.config import DataGenConfig
    from data_gen.inputs import load_inputs
    from ragroute.config import load_config
    from ragroute.engines.base import GenerationRequest, create_engine
    from ragroute.models import load_model_spec
    from ragroute.rag.pipeline import RAGPipeline

    overrides = [f"questions={args.dataset}", "sampling.verdict.enabled=true"]
    overrides += [f"model_config={args.model_config}"] if args.model_config else []
    cfg = load_config(DataGenConfig, args.config, overrides)
    inputs = load_inputs(cfg.questions, cfg.corpus)
    spec = load_model_spec(cfg.model_config)
    prompts = [GenerationRequest(messages=p.messages) for p in RAGPipeline(cfg.pipeline, inputs.corpus).prepare_batch(
        [q.question for q in inputs.questions[: args.n]])]
    verdict_s, answer_s, tokens = [], [], []
    with create_engine(spec, cfg.engine) as engine:
        engine.generate(prompts[:2], cfg.sampling)  # warm-up
        for request in prompts:
            started = time.perf_counter()
            [answer] = engine.generate([request], cfg.sampling)  # verdict-first: the verdict step, then the rest
            answer_s.append(time.perf_counter() - started)
            verdict_s.append(answer.timings["verdict"])
            tokens.append(answer.completion_tokens)
    result = {
        "model": spec.name, "engine": cfg.engine.name, "n": len(prompts), "config": args.config,
        "verdict_step_mean_s": statistics.mean(verdict_s), "verdict_step_p50_s": statistics.median(verdict_s),
        "answer_mean_s": statistics.mean(answer_s), "answer_p50_s": statistics.median(answer_s),
        "answer_tokens_mean": statistics.mean(tokens),
        "overhead_share": statistics.mean(verdict_s) / statistics.mean(answer_s),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
