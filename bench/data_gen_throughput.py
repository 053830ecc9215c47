"""data_gen throughput: questions/min with the engine batched vs one question at a time, same model, one run.

    .venv/bin/python bench/data_gen_throughput.py --n 64 \
        --json bench/results/data_gen_throughput.json

Both passes run data_gen's own answering loop (RAG pipeline ▶ vLLM engine ▶ durable JSONL records) on one
engine, loaded once, with the offline teacher config; only the batch size (questions per engine call)
differs. Engine start-up (~25 s on CPU) is excluded: it is paid once per run whatever the batch size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ragroute.config import shared_pubmedqa_dev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(shared_pubmedqa_dev()), help="PubMedQA-format file (default: the bundled dev set)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--config", default="configs/data_gen/smollm2-135m_pubmedqa_teacher.yaml")
    parser.add_argument("--json")
    args = parser.parse_args()

    from data_gen.config import DataGenConfig
    from data_gen.generate import answer_questions
    from data_gen.inputs import load_inputs
    from ragroute.config import load_config
    from ragroute.engines.base import create_engine
    from ragroute.models import load_model_spec
    from ragroute.rag.pipeline import RAGPipeline
    from ragroute.records import JsonlWriter

    cfg = load_config(DataGenConfig, args.config, [f"questions={args.dataset}"])
    inputs = load_inputs(cfg.questions, cfg.corpus)
    questions = inputs.questions[: args.n]
    spec = load_model_spec(cfg.model_config)
    pipeline = RAGPipeline(cfg.pipeline, inputs.corpus)
    passes = {}
    with create_engine(spec, cfg.engine) as engine, tempfile.TemporaryDirectory() as tmp:
        answer_questions(questions[:2], pipeline, engine, cfg.sampling, JsonlWriter(Path(tmp) / "warm.jsonl"),
                         2, spec.name, "bench")  # warm-up
        for name, batch_size in (("batched", args.batch_size), ("sequential", 1)):
            with JsonlWriter(Path(tmp) / f"{name}.jsonl") as writer:
                started = time.perf_counter()
                written, _ = answer_questions(questions, pipeline, engine, cfg.sampling, writer, batch_size,
                                              spec.name, "bench")
                wall = time.perf_counter() - started
            passes[name] = {"batch_size": batch_size, "questions": written, "wall_s": wall,
                            "questions_per_min": 60 * written / wall}
    result = {"config": args.config, "model": spec.name, "n": len(questions), **passes,
              "speedup": passes["batched"]["questions_per_min"] / passes["sequential"]["questions_per_min"],
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
