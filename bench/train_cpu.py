"""CPU throughput of the offline default training run (configs/train/smollm2-135m_to_pruned_kd.yaml).

Builds teacher records from the bundled demo questions (RAG-shaped prompts: the demo corpus document as context,
the demo long answer as the teacher's answer) unless --data names real data_gen records, runs ``train.main`` for a
few steps at each dtype, and writes bench/results/train_cpu.json with tokens/s from the train reports.

  .venv/bin/python bench/train_cpu.py --steps 6
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_CONFIG = REPO / "configs" / "train" / "smollm2-135m_to_pruned_kd.yaml"


def demo_records(path: Path) -> Path:
    from ragroute.records import AnswerRecord, JsonlWriter

    demo = REPO / "ragroute" / "data" / "demo"
    corpus = {d["id"]: d for d in map(json.loads, (demo / "corpus.jsonl").read_text().splitlines())}
    with JsonlWriter(path, fsync=False) as writer:
        for q in map(json.loads, (demo / "questions.jsonl").read_text().splitlines()):
            doc = corpus.get(q["doc_id"], {"title": "", "text": ""})
            messages = [
                {
                    "role": "system",
                    "content": "Answer the biomedical question using only the numbered documents; "
                    "start with yes, no or maybe and cite documents like [0].",
                },
                {
                    "role": "user",
                    "content": f"[0] {doc['title']}\n{doc['text']}\n\nQuestion: {q['question']}",
                },
            ]
            writer.write(
                AnswerRecord(
                    id=q["id"],
                    question=q["question"],
                    answer=q["long_answer"],
                    model="teacher",
                    messages=messages,
                )
            )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="teacher records.jsonl (default: built from the demo questions)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dtypes", default="auto,float32")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train_cpu.json"))
    args = parser.parse_args()

    from ragroute.config import load_config
    from ragroute.hardware import pick_dtype
    from train.config import TrainConfig
    from train.main import main as train_main

    work = Path(tempfile.mkdtemp(prefix="bench-train-cpu-"))
    data = args.data or str(demo_records(work / "records.jsonl"))
    results: dict = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "config": str(DEFAULT_CONFIG),
        "steps": args.steps,
        "runs": {},
    }
    try:
        import torch

        results["machine"] = (
            f"{torch.get_num_threads()} torch threads, CPU {Path('/proc/cpuinfo').read_text().split('model name')[1].split(chr(10))[0].strip(': ')}"
        )
    except (OSError, IndexError):
        pass
    for dtype in args.dtypes.split(","):
        cfg = load_config(
            TrainConfig,
            DEFAULT_CONFIG,
            [
                f"data={data}",
                f"output_dir={work / dtype}",
                f"max_steps={args.steps}",
                f"dtype={dtype}",
                f"save_steps={args.steps}",
            ],
        )
        report = train_main(cfg)
        steady = sorted(report["step_s"][1:])
        results["runs"][f"{dtype} ({pick_dtype(dtype)})"] = {
            k: report[k]
            for k in (
                "steps",
                "tokens_per_s",
                "median_step_s",
                "first_loss",
                "final_loss",
                "eval_loss",
                "peak_memory_gb",
                "wall_s",
                "train_tokens",
            )
        } | {
            "steady_tokens_per_step": report["train_tokens"] / max(report["steps"], 1),
            "median_step_after_first_s": steady[len(steady) // 2] if steady else None,
        }
        print(json.dumps({dtype: results["runs"][f"{dtype} ({pick_dtype(dtype)})"]}), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
