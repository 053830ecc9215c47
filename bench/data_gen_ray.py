"""data_gen on Ray vs the local executor: questions/min of whole `ragroute data-gen` runs, one run of this script.

    .venv/bin/python bench/data_gen_ray.py --n 96 --rounds 3 --json bench/results/data_gen_ray.json

Each pass is the command a user runs, `ragroute data-gen --config C --questions Q --out DIR --limit N`, in a
fresh process into a fresh output directory (Python start, imports, inputs loaded, pipeline and engine started,
every record written and fsynced, engine shut down), with the offline teacher config (vLLM CPU build): the local
executor, and `--executor ray` with 1 and with 2 engine actors joined to one Ray instance started here with
this machine's CPUs as `ragroute data-gen --executor ray` starts one for itself (workers at nice 0, not Ray's
15; `--ray-default-niceness` keeps Ray's), its start-up reported apart (a cluster outlives many runs). The
passes are interleaved, round after round (local, ray_1, ray_2, local, ray_1, ray_2, ...), so that drift in the
load of a shared machine hits every configuration alike; each configuration's figure is the median of its
passes. With 2 actors the CPUs left after the retrieval worker are split between the two engine actors.

Two figures per pass, from the arrival times of the records in the output file (polled every 20 ms):

- end to end: records / wall time of the whole command, start-up included (what a user pays);
- steady state: the records after the first engine batch / the time from that batch's last record to the last
  record, i.e. the rate once every worker is up (start-up excluded).

The Ray path's cost at one actor is ``1 - ray_1 / local`` on the medians; the per-round ratios (each ray_1 pass
against the local pass of its round) are reported too. The 1-minute load average is recorded around every pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def watch_records(path: Path, arrivals: list[float], done: threading.Event, started: float) -> None:
    """Append the arrival time (s since ``started``) of every new line of ``path`` until ``done`` is set."""
    offset = 0
    while True:
        finished = done.is_set()
        if path.exists():
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(complete)
            now = time.perf_counter() - started
            arrivals.extend([now] * complete.count(b"\n"))
        if finished:
            return
        time.sleep(0.02)


def steady_q_per_min(arrivals: list[float], batch_size: int) -> float | None:
    """Records after the first engine batch per minute, timed from that batch's last record to the last one."""
    if len(arrivals) <= batch_size:
        return None
    span = arrivals[-1] - arrivals[batch_size - 1]
    return round(60 * (len(arrivals) - batch_size) / span, 2) if span > 0 else None


def one_pass(base: list[str], out: Path, overrides: list[str], batch_size: int, log: Path) -> dict:
    """Run one `ragroute data-gen` command into ``out``; its wall time and record arrival times."""
    arrivals: list[float] = []
    done = threading.Event()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    watcher = threading.Thread(target=watch_records, args=(out / "records.jsonl", arrivals, done, started))
    watcher.start()
    with log.open("ab") as fh:
        run = subprocess.run([*base, "--out", str(out), *overrides], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    if run.returncode != 0:
        raise SystemExit(f"pass failed (exit {run.returncode}): see {log}")
    written = len(arrivals)
    return {
        "wall_s": round(wall, 2), "written": written, "q_per_min": round(60 * written / wall, 2),
        "first_record_s": round(arrivals[0], 2) if arrivals else None,
        "steady_q_per_min": steady_q_per_min(arrivals, batch_size),
        "load_1m_before": round(load_before, 2), "load_1m_after": round(os.getloadavg()[0], 2),
    }


def executor_settings(cpus: int, address: str) -> dict[str, list[str]]:
    """CLI flags per configuration: with 2 actors the CPUs left after the retrieval worker are split in two."""
    prepare_cpus = 0.5
    ray = ["--executor", "ray", "--ray-address", address, "--ray-prepare-cpus", str(prepare_cpus)]
    return {
        "local": ["--executor", "local"],
        "ray_1": [*ray, "--ray-actors", "1", "--ray-cpus-per-actor", str(cpus - prepare_cpus)],
        "ray_2": [*ray, "--ray-actors", "2", "--ray-cpus-per-actor", str((cpus - prepare_cpus) / 2)],
    }


def summary(passes: dict[str, list[dict]], key: str) -> dict[str, float | None]:
    values = {name: [p[key] for p in runs if p[key] is not None] for name, runs in passes.items()}
    return {name: round(statistics.median(v), 2) if v else None for name, v in values.items()}


def paired_costs(passes: dict[str, list[dict]], key: str) -> list[float]:
    """Per round: 1 - ray_1 / local, each ray_1 pass against the local pass of the same round."""
    return [round(1 - ray[key] / local[key], 3) for local, ray in zip(passes["local"], passes["ray_1"], strict=False)
            if ray[key] and local[key]]


def parse_args() -> argparse.Namespace:
    from ragroute.config import shared_pubmedqa_dev

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(shared_pubmedqa_dev()))
    parser.add_argument("--n", type=int, default=96, help="questions per pass")
    parser.add_argument("--rounds", type=int, default=3, help="passes of each configuration, interleaved")
    parser.add_argument("--configs", default="local,ray_1,ray_2", help="configurations, in the order of a round")
    parser.add_argument("--config", default="configs/data_gen/smollm2-135m_pubmedqa_teacher.yaml")
    parser.add_argument("--ray-default-niceness", action="store_true",
                        help="start the Ray instance with Ray's own worker niceness (15) instead of data_gen's (0)")
    parser.add_argument("--json")
    parser.add_argument("--log", default=None, help="the passes' output (default: a file in the temporary directory)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import ray

    from data_gen.config import DataGenConfig
    from data_gen.ray_executor import local_ray_env
    from ragroute.config import load_config

    cpus = os.cpu_count() or 1
    if not args.ray_default_niceness:
        local_ray_env()  # the Ray instance `ragroute data-gen --executor ray` starts for itself
    run = {"batch_size": load_config(DataGenConfig, args.config, []).batch_size,
           "load_1m_before": round(os.getloadavg()[0], 2), "cpus": cpus,
           "ray_worker_niceness": int(os.environ.get("RAY_worker_niceness", 15)), "ray_version": ray.__version__}
    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False)
    run["ray_start_s"] = round(time.perf_counter() - started, 2)
    run["executor_settings"] = executor_settings(cpus, ray.get_runtime_context().gcs_address)
    passes: dict[str, list[dict]] = {name: [] for name in args.configs.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(args.log or Path(tmp) / "passes.log")
        base = [sys.executable, "-m", "ragroute.cli", "data-gen", "--config", args.config, "--questions", args.dataset,
                "--pipeline.index-dir", str(Path(tmp) / "index")]
        # Build the retrieval indexes once (cached in index_dir) so no pass pays for them.
        one_pass(base, Path(tmp) / "warm", ["--limit", "1", "--engine.name", "transformers"], 1, log)
        for round_no in range(args.rounds):
            for name in passes:
                flags = ["--limit", str(args.n), *run["executor_settings"][name]]
                result = one_pass(base, Path(tmp) / f"{round_no}-{name}", flags, run["batch_size"], log)
                print(f"round {round_no + 1} {name}: {result}", flush=True)
                passes[name].append(result)
            result = report(args, passes, run, round_no + 1)  # after every round: a stopped run keeps its rounds
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ray.shutdown()
    print(json.dumps(result, indent=2))


def report(args: argparse.Namespace, passes: dict[str, list[dict]], run: dict, rounds_done: int) -> dict:
    end_to_end, steady = summary(passes, "q_per_min"), summary(passes, "steady_q_per_min")
    return {
        "local_q_per_min": end_to_end.get("local"), "ray_1_q_per_min": end_to_end.get("ray_1"),
        "ray_2_q_per_min": end_to_end.get("ray_2"), "n": args.n, "rounds": rounds_done,
        "ray_1_cost_vs_local": cost(end_to_end), "ray_1_cost_per_round": paired_costs(passes, "q_per_min"),
        "steady_q_per_min": steady, "ray_1_steady_cost_vs_local": cost(steady),
        "first_record_s": summary(passes, "first_record_s"),
        "passes": passes, "executor_settings": run["executor_settings"], "ray_start_s": run["ray_start_s"],
        "ray_worker_niceness": run["ray_worker_niceness"],
        "config": args.config, "batch_size": run["batch_size"], "dataset": Path(args.dataset).name,
        "machine": f"{platform.machine()} {run['cpus']} CPUs, {platform.platform()}",
        "load_1m_before": run["load_1m_before"], "load_1m_after": round(os.getloadavg()[0], 2),
        "versions": {"ray": run["ray_version"], "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def cost(rates: dict[str, float | None]) -> float | None:
    if not rates.get("local") or not rates.get("ray_1"):
        return None
    return round(1 - rates["ray_1"] / rates["local"], 3)


if __name__ == "__main__":
    main()
