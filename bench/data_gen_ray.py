"""data_gen on Ray vs the local executor: questions/min of whole `ragroute data-gen` runs, one run of this script.

    .venv/bin/python bench/data_gen_ray.py --n 96 --json bench/results/data_gen_ray.json

Each pass is ``data_gen.main.main`` end to end into a fresh output directory (inputs loaded on the driver,
pipeline and engine started, every record written and fsynced), with the offline teacher config (vLLM CPU
build): the local executor, then ``--executor ray`` with 1 and with 2 engine actors, on one Ray instance
started here with this machine's CPUs (its start-up is reported apart: a cluster outlives many runs). The
passes run in the order local, ray_1, ray_2, ray_1, local so that drift in the load of a shared machine hits
both executors alike; each configuration's figure is the mean of its passes. With 2 actors the CPUs left
after the retrieval worker are shared between the two engine actors. The 1-minute load average is recorded
before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def one_pass(config: str, dataset: str, n: int, out: Path, executor_overrides: list[str]) -> dict:
    from data_gen.config import DataGenConfig
    from data_gen.main import main
    from ragroute.config import load_config

    cfg = load_config(DataGenConfig, config, [f"questions={dataset}", f"out={out}", f"limit={n}",
                                              f"pipeline.index_dir={out.parent / 'index'}", *executor_overrides])
    started = time.perf_counter()
    counts = main(cfg)
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), "written": counts["written"], "q_per_min": round(60 * counts["written"] / wall, 2),
            "load_1m_after": os.getloadavg()[0]}


def main() -> None:
    from ragroute.config import shared_pubmedqa_dev

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(shared_pubmedqa_dev()))
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--config", default="configs/data_gen/smollm2-135m_pubmedqa_teacher.yaml")
    parser.add_argument("--json")
    args = parser.parse_args()

    import ray

    cpus = os.cpu_count() or 1
    prepare_cpus = 0.5
    configs = {
        "local": ["executor=local"],
        "ray_1": ["executor=ray", "ray_actors=1", f"ray_prepare_cpus={prepare_cpus}",
                  f"ray_cpus_per_actor={cpus - prepare_cpus}"],
        "ray_2": ["executor=ray", "ray_actors=2", f"ray_prepare_cpus={prepare_cpus}",
                  f"ray_cpus_per_actor={(cpus - prepare_cpus) / 2}"],
    }
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False)
    ray_start_s = time.perf_counter() - started
    passes: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        # Build the retrieval indexes once (cached in index_dir) so no pass pays for them.
        one_pass(args.config, args.dataset, 1, Path(tmp) / "warm", ["executor=local", "engine.name=transformers"])
        for i, name in enumerate(("local", "ray_1", "ray_2", "ray_1", "local")):
            result = one_pass(args.config, args.dataset, args.n, Path(tmp) / f"{i}-{name}", configs[name])
            print(f"{name}: {result}", flush=True)
            passes[name].append(result)
    ray.shutdown()
    rate = {name: round(statistics.mean(p["q_per_min"] for p in runs), 2) for name, runs in passes.items()}
    result = {
        "local_q_per_min": rate["local"], "ray_1_q_per_min": rate["ray_1"], "ray_2_q_per_min": rate["ray_2"],
        "n": args.n,
        "ray_1_cost_vs_local": round(1 - rate["ray_1"] / rate["local"], 3),
        "ray_2_vs_local": round(rate["ray_2"] / rate["local"], 3),
        "passes": passes, "executor_settings": configs, "ray_start_s": round(ray_start_s, 2),
        "config": args.config, "dataset": Path(args.dataset).name,
        "machine": f"{platform.machine()} {cpus} CPUs, {platform.platform()}",
        "load_1m_before": load_before, "load_1m_after": os.getloadavg()[0],
        "versions": {"ray": ray.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
