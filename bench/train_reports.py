"""Collect the train reports of bench/gpu_train.sh's runs into one JSON and a Markdown table.

Each run is ``ragroute train`` (``accelerate launch -m train``); the script copies its ``train_report.json`` to
``<reports>/<run>.json``. A run with a log but no report failed, and its log's last lines are kept instead.

  python bench/train_reports.py --reports /dev/shm/ragroute-train/reports --logs gpu-out/train_logs \
      --out gpu-out/train_gpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KEYS = (
    "steps", "world_size", "distributed_type", "fsdp_version", "mixed_precision", "device", "loss",
    "steady_tokens_per_s", "steady_tokens_per_s_per_device", "tokens_per_s", "tokens_per_step", "median_step_s",
    "peak_memory_gb_per_rank", "peak_memory_kind", "train_runtime_s", "wall_s", "step_s", "first_loss", "final_loss",
    "final_model", "resumed_from", "shape_only", "versions",
)
CONFIG_KEYS = ("teacher", "per_device_batch_size", "gradient_accumulation_steps", "max_length", "gradient_checkpointing")


def collect(reports: Path, logs: Path | None) -> dict:
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "shape_only": True,
                 "note": "random weights: tokens/s and memory are real, losses mean nothing", "runs": {}}
    files = list(reports.glob("*.json")) + (list(logs.glob("*.log")) if logs is not None else [])
    started: dict[str, float] = {}  # run order: the earliest file of each run
    for f in files:
        started[f.stem] = min(started.get(f.stem, f.stat().st_mtime), f.stat().st_mtime)
    for name in sorted(started, key=started.get):
        report = reports / f"{name}.json"
        if report.is_file():
            data = json.loads(report.read_text())
            config = data.get("config", {})
            out["runs"][name] = {k: data.get(k) for k in KEYS} | {k: config.get(k) for k in CONFIG_KEYS}
            out["runs"][name]["student"] = config.get("student", {}).get("model")
        else:
            log = logs / f"{name}.log" if logs is not None else None
            tail = log.read_text(errors="replace").splitlines()[-25:] if log is not None and log.is_file() else []
            out["runs"][name] = {"error": "no train_report.json", "log_tail": tail}
    return out


def table(result: dict) -> str:
    rows = ["| run | GPUs | tokens/s (all GPUs) | tokens/s per GPU | median step | peak GB per rank |",
            "|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        if "error" in r:
            rows.append(f"| {name} | failed | | | | |")
            continue
        step = f"{r['median_step_s']:.3f} s" if r.get("median_step_s") else ""
        mem = " / ".join(f"{m:.1f}" for m in r.get("peak_memory_gb_per_rank") or [])
        rows.append(f"| {name} | {r['world_size']} ({r['distributed_type']}) | {r['steady_tokens_per_s']} | "
                    f"{r['steady_tokens_per_s_per_device']} | {step} | {mem} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", required=True, help="directory holding <run>.json train reports")
    parser.add_argument("--logs", help="directory holding <run>.log")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    result = collect(Path(args.reports), Path(args.logs) if args.logs else None)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
