"""Bounded load on loopback against `ragroute serve`: throughput, latency percentiles, errors, and the server's
overhead over calling the model directly.

Two modes:

* ``--mode echo`` (default): both models are a FAKE echo OpenAI-compatible upstream (serve/echo_upstream.py,
  its own process), so the numbers are the serving layer's cost alone: routing, validation, SSE relaying,
  metrics. The same load is first sent straight to the echo upstream ("direct"); ``overhead_p50_ms`` is
  p50(through ragroute) - p50(direct) at the same concurrency.
* ``--mode real``: the models run in the ragroute process (``--config``, default the offline SmolLM2 pair on
  transformers); "direct" drives the same backend class in this process without HTTP.

* ``--mode gpu``: ``ragroute serve`` with both shape-only Qwen2.5 models in-process on one GPU (vLLM AsyncLLM,
  teacher 7B at 55% of the memory, student 1.5B at 30%) or, with ``--gpus 2``, each on its own GPU
  (``engine.devices``), RAG over the PubMedQA dev abstracts (V3.1 pipeline), and the stand-in router of
  bench/gpu_pipeline.py at teacher share 0.3. ``/v1/answer`` at each concurrency (default 1/4/16/64/256),
  teacher-only (``model: teacher``) then routed; goodput = the highest throughput of a level whose p99 total
  latency is <= ``--slo-s``. With ``--open-loop``, goodput is instead the highest Poisson arrival rate whose p99
  total latency is <= ``--slo-s`` (a swept rate: grow, then bisect), teacher-only then routed on the same
  schedules.

Both servers run as subprocesses (``ragroute serve``), the clients here (httpx, N concurrent, fixed request
count, streaming by default). ``--json OUT`` writes {"requests", "errors", "concurrency", "throughput_rps",
"p50_ms", "p95_ms", "p99_ms", "overhead_p50_ms", ...}.

    .venv/bin/python bench/serve_load.py --concurrency 64 --requests 2000 --json /tmp/serve_load.json
    .venv/bin/python bench/serve_load.py --mode real --concurrency 4 --requests 16 --max-tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
QUESTIONS = [
    "What is the first-line oral drug for type 2 diabetes?",
    "Does intensive blood pressure control reduce stroke in elderly patients?",
    "Which vitamin deficiency causes scurvy?",
    "Is aspirin effective for primary prevention of cardiovascular events?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """A subprocess in the repository root; its output goes to $SERVE_LOAD_LOG if set, else nowhere."""
    log = open(os.environ["SERVE_LOAD_LOG"], "ab") if os.environ.get("SERVE_LOAD_LOG") else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else subprocess.DEVNULL,
    )


async def one_request(
    client: httpx.AsyncClient, url: str, body: dict, stream: bool
) -> tuple[float, float | None]:
    """(latency s, time to first content s) of one chat completion; raises on any failure."""
    started = time.perf_counter()
    if not stream:
        response = await client.post(url, json=body)
        response.raise_for_status()
        if not response.json()["choices"][0]["message"]["content"]:
            raise RuntimeError("empty answer")
        return time.perf_counter() - started, None
    ttft = None
    done = False
    async with client.stream("POST", url, json={**body, "stream": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            if ttft is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - started
    if not done:
        raise RuntimeError("stream ended without [DONE]")
    return time.perf_counter() - started, ttft


async def run_load(
    url: str, model: str, n_requests: int, concurrency: int, max_tokens: int, stream: bool
) -> dict:
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: list[str] = []
    counter = iter(range(n_requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(limits=limits, timeout=600) as client:

        async def worker() -> None:
            for i in counter:
                body = {
                    "model": model,
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                }
                try:
                    latency, ttft = await one_request(client, url, body, stream)
                    latencies.append(latency)
                    if ttft is not None:
                        ttfts.append(ttft)
                except Exception as exc:  # counted, not fatal: the benchmark reports errors
                    errors.append(f"{type(exc).__name__}: {exc}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return summarize(latencies, ttfts, errors, n_requests, concurrency, wall)


def summarize(
    latencies: list[float], ttfts: list[float], errors: list[str], n: int, concurrency: int, wall: float
) -> dict:
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    result = {
        "requests": n,
        "errors": len(errors),
        "concurrency": concurrency,
        "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }
    if ttfts:
        result["ttft_p50_ms"] = round(float(np.percentile(np.array(ttfts) * 1000, 50)), 3)
    if errors:
        result["first_errors"] = sorted(set(errors))[:5]
    return result


async def run_direct_backend(
    config: str, n_requests: int, concurrency: int, max_tokens: int, warmup: int
) -> dict:
    """The real-mode baseline: the configured teacher backend driven in this process, no HTTP in between."""
    from ragroute.config import load_config
    from ragroute.engines.base import SamplingConfig
    from serve.backends import create_backend
    from serve.config import ServeConfig

    cfg = load_config(ServeConfig, config)
    backend = create_backend(cfg.teacher)
    await backend.start()
    sampling = SamplingConfig(
        max_tokens=max_tokens, temperature=(cfg.sampling or SamplingConfig()).temperature
    )
    for i in range(warmup):  # same warm-up as the served run: first calls pay for lazy kernel setup
        await backend.complete([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], sampling)
    latencies, ttfts, errors = [], [], []
    counter = iter(range(n_requests))

    async def worker() -> None:
        for i in counter:
            messages = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
            try:
                started = time.perf_counter()
                ttft = None
                async for chunk in backend.stream(messages, sampling):
                    if ttft is None and chunk.text:
                        ttft = time.perf_counter() - started
                latencies.append(time.perf_counter() - started)
                if ttft is not None:
                    ttfts.append(ttft)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    await backend.close()
    return summarize(latencies, ttfts, errors, n_requests, concurrency, wall)


async def run_answer_load(
    url: str, model: str, questions: list[str], concurrency: int, max_tokens: int
) -> dict:
    """Closed-loop load on /v1/answer: ``concurrency`` clients, one question each at a time, all different."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(len(questions)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:

        async def worker() -> None:
            for i in counter:
                body = {"question": questions[i], "options": {"model": model, "max_tokens": max_tokens}}
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=body)
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - started)
                except Exception as exc:  # counted, not fatal
                    errors.append(f"{type(exc).__name__}: {exc}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return summarize(latencies, [], errors, len(questions), concurrency, wall)


async def run_open_loop(
    url: str,
    model: str,
    questions: list[str],
    rate: float,
    duration_s: float,
    max_tokens: int,
    slo_s: float,
    seed: int = 0,
) -> dict:
    """Open-loop load on /v1/answer: Poisson arrivals at ``rate`` requests/s for ``duration_s`` (at least 40
    requests), each sent when its time comes whatever the server is doing. Stops early, cancelling what is in
    flight, once so many requests are (or must end up) over ``slo_s`` that p99 cannot meet it."""
    n = max(40, round(rate * duration_s))
    gaps = np.random.default_rng(seed).exponential(1 / rate, n)
    arrivals = np.cumsum(gaps) - gaps[0]
    # p99 = np.percentile's interpolation between sorted[lo] and sorted[lo + 1]: it is over the SLO for sure
    # once n - lo requests are.
    lo = int(np.floor(0.99 * (n - 1)))
    latencies: list[float] = []
    answered: list[tuple[str, float, float]] = []  # (model that answered, total s, its generation s)
    errors: list[str] = []
    began: dict[int, float] = {}
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, arrivals[i] - (time.perf_counter() - t0)))
            body = {
                "question": questions[i % len(questions)],
                "options": {"model": model, "max_tokens": max_tokens},
            }
            began[i] = time.perf_counter()
            try:
                response = await client.post(url, json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - began.pop(i))
                reply = response.json()
                answered.append(
                    (reply["answered_by"], latencies[-1], reply["timings"].get("generation", 0.0))
                )
            except Exception as exc:  # counted, not fatal
                began.pop(i, None)
                errors.append(f"{type(exc).__name__}: {exc}")

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        stopped = False
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=0.25)
            now = time.perf_counter()
            over = (
                len(errors) + sum(x > slo_s for x in latencies) + sum(now - b > slo_s for b in began.values())
            )
            if over >= n - lo:
                stopped = True
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                break
        wall = time.perf_counter() - t0
    row = summarize(latencies, [], errors, n, 0, wall)
    row.pop("concurrency")
    row.update(
        rate_rps=rate,
        completed=len(latencies),
        stopped_early=stopped,
        meets_slo=not stopped and not errors and row["p99_ms"] <= 1000 * slo_s,
        by_model=by_model(answered),
    )
    if stopped:
        row["p99_ms"] = None
    return row


def by_model(answered: list[tuple[str, float, float]]) -> dict[str, dict[str, float]]:
    """Per answering model: count, total latency p50/p99 and generation p50/p99 (ms): which model's answers
    broke the SLO, and whether their generation (the card) or the wait before it took the time."""
    out = {}
    for model in sorted({m for m, _, _ in answered}):
        total = [t * 1000 for m, t, _ in answered if m == model]
        gen = [g * 1000 for m, _, g in answered if m == model]
        out[model] = {
            "n": len(total),
            "p50_ms": round(float(np.percentile(total, 50)), 1),
            "p99_ms": round(float(np.percentile(total, 99)), 1),
            "gen_p50_ms": round(float(np.percentile(gen, 50)), 1),
            "gen_p99_ms": round(float(np.percentile(gen, 99)), 1),
        }
    return out


def wait_idle(server: str, timeout_s: float = 120) -> None:
    """Until the server has no request in flight (requests cancelled by an early stop drain first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{server}/metrics", timeout=5)
        response.raise_for_status()
        text = response.text
        line = next((x for x in text.splitlines() if x.startswith("ragroute_in_flight_requests ")), "x 0")
        if float(line.split()[1]) == 0:
            return
        time.sleep(0.5)


def goodput_search(
    args: argparse.Namespace,
    server: str,
    model: str,
    questions: list[str],
    on_level: Callable[[dict], None] = lambda rows: None,
) -> dict:
    """The highest Poisson rate whose p99 total latency stays <= the SLO: rates grow by ``--rate-factor`` from
    ``--rate-start`` until one fails, then ``--refine`` bisections between the last pass and the first fail."""
    url, rows = f"{server}/v1/answer", {}

    def level(rate: float) -> bool:
        rate = round(rate, 2)
        row = asyncio.run(
            run_open_loop(
                url, model, questions, rate, args.level_s, args.max_tokens, args.slo_s, seed=len(rows)
            )
        )
        wait_idle(server)
        print(model, json.dumps(row), flush=True)
        rows[f"{rate}"] = row
        on_level(rows)
        return row["meets_slo"]

    good, bad, rate = 0.0, None, args.rate_start
    while rate <= args.rate_max:
        if not level(rate):
            bad = rate
            break
        good, rate = rate, rate * args.rate_factor
    for _ in range(args.refine if bad is not None else 0):
        mid = (good + bad) / 2 if good else bad / 2
        if level(mid):
            good = mid
        else:
            bad = mid
    return {"goodput_rps": round(good, 2), "first_failing_rps": bad, "levels": rows}


def gpu_serve_config(args: argparse.Namespace, questions: list, workdir: Path) -> str:
    """Serve + pipeline YAMLs for the shape-only pair, and the stand-in router at teacher share ``args.share``."""
    import numpy as np
    from gpu_pipeline import stand_in_router

    from router.persist import save_router

    bundle, _ = stand_in_router(questions[len(questions) // 2 :])
    threshold = float(np.quantile(bundle.score([q.question for q in questions]), 1 - args.share))
    router = save_router(bundle, workdir / "router.skops")
    pipeline = workdir / "pipeline.yaml"
    pipeline.write_text(
        (REPO / "configs/pipeline/v3.1.yaml").read_text()
        + f"index_dir: {workdir / 'index'}\n"
        + (f"dense_model: {args.dense_model}\n" if args.dense_model else "")
    )
    config = workdir / "serve.yaml"
    # One GPU: the two engines split it. Two: each on its own card (engine.devices), most of its memory.
    student, teacher = (
        ("devices: [1], gpu_memory_utilization: 0.85", "devices: [0], gpu_memory_utilization: 0.85")
        if args.gpus == 2
        else ("gpu_memory_utilization: 0.3", "gpu_memory_utilization: 0.55")
    )
    if args.student_mps_percentage:  # under CUDA MPS: the student's share of the SMs
        student += f", mps_thread_percentage: {args.student_mps_percentage}"
    config.write_text(f"""student: {{model: {args.student}, engine: {{name: vllm, {student}}}, timeout_s: 600}}
teacher: {{model: {args.teacher}, engine: {{name: vllm, {teacher}}}, timeout_s: 600}}
rag: true
pipeline: {pipeline}
corpus: {args.dataset}
pipeline_workers: 4
routing: {{router_path: {router}, threshold: {threshold}, if_missing: error}}
limits: {{max_concurrent: 1024, max_queue: 4096, max_tokens_limit: 1024, request_timeout_s: 600}}
log_level: warning
""")
    return str(config)


def gpu_sweep(args: argparse.Namespace, server: str, questions: list[str]) -> dict:
    url = f"{server}/v1/answer"
    asyncio.run(run_answer_load(url, "router", questions[:8], 4, args.max_tokens))  # warm-up
    from ragroute.hardware import mps_active

    result: dict = {
        "slo_s": args.slo_s,
        "share": args.share,
        "max_tokens": args.max_tokens,
        "gpus": args.gpus,
        "cuda_mps": mps_active(),
        "student_mps_percentage": args.student_mps_percentage,
        "levels": {},
    }
    if args.open_loop:  # the same Poisson schedules for both, teacher-only first
        for model, key in (("teacher", "teacher"), ("router", "routed")):

            def save(rows: dict, key: str = key) -> None:  # a run stopped by a time limit keeps its levels
                result[f"open_loop_{key}"] = {"levels": rows}
                if args.json:
                    Path(args.json).write_text(
                        json.dumps({**result, "mode": "gpu", "partial": True}, indent=2)
                    )

            found = goodput_search(args, server, model, questions, save)
            result[f"goodput_{key}_rps"] = found["goodput_rps"]
            result[f"open_loop_{key}"] = found
        result["goodput_method"] = (
            f"open loop: Poisson arrivals, {args.level_s:g} s (>= 40 requests) a rate, "
            f"p99 total <= {args.slo_s:g} s, 0 errors"
        )
        return result
    for model in ("teacher", "router"):
        good = 0.0
        for level in args.levels:
            n = max(args.rounds * level, 8)
            batch = [questions[(level + i) % len(questions)] for i in range(n)]
            row = asyncio.run(run_answer_load(url, model, batch, level, args.max_tokens))
            print(model, json.dumps(row), flush=True)
            result["levels"][f"{model}_c{level}"] = row
            if row["errors"] == 0 and row["p99_ms"] <= 1000 * args.slo_s:
                good = max(good, row["throughput_rps"])
        result[f"goodput_{'routed' if model == 'router' else 'teacher'}_rps"] = good
    for level in (64, 256):
        result[f"c{level}"] = result["levels"].get(f"router_c{level}")
    return result


def echo_serve_config(upstream: str) -> str:
    text = f"""rag: false
student: {{name: echo-student, engine: {{name: openai, base_url: "{upstream}", concurrency: 512}}}}
teacher: {{name: echo-teacher, engine: {{name: openai, base_url: "{upstream}", concurrency: 512}}}}
routing: {{if_missing: heuristic}}
limits: {{max_concurrent: 512, max_queue: 1024}}
log_level: warning
"""
    path = Path(tempfile.mkdtemp(prefix="serve-load-")) / "echo.yaml"
    path.write_text(text)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("echo", "real", "gpu"), default="echo")
    parser.add_argument("--teacher", default="qwen2.5-7b-shape", help="gpu mode: teacher model config")
    parser.add_argument("--student", default="qwen2.5-1.5b-shape", help="gpu mode: student model config")
    parser.add_argument("--dataset", help="gpu mode: PubMedQA json (default: the shared dev set)")
    parser.add_argument("--dense-model", help="gpu mode: sentence-transformers path for dense retrieval")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument(
        "--rounds", type=int, default=3, help="gpu mode: requests per level = rounds x concurrency"
    )
    parser.add_argument("--share", type=float, default=0.3, help="gpu mode: routed teacher share")
    parser.add_argument("--slo-s", type=float, default=3.0, help="gpu mode: p99 bound for goodput")
    parser.add_argument(
        "--gpus",
        type=int,
        choices=(1, 2),
        default=1,
        help="gpu mode: 1 = both models on GPU 0; 2 = teacher on GPU 0, student on GPU 1",
    )
    parser.add_argument(
        "--student-mps-percentage",
        type=int,
        help="gpu mode: the student's engine.mps_thread_percentage (run under a CUDA MPS daemon)",
    )
    parser.add_argument(
        "--open-loop",
        action="store_true",
        help="gpu mode: goodput from Poisson arrivals at a swept rate instead of closed-loop levels",
    )
    parser.add_argument("--rate-start", type=float, default=2.0, help="open loop: first rate (requests/s)")
    parser.add_argument("--rate-factor", type=float, default=1.5, help="open loop: growth until a rate fails")
    parser.add_argument("--rate-max", type=float, default=64.0, help="open loop: highest rate tried")
    parser.add_argument("--refine", type=int, default=2, help="open loop: bisections after the first failure")
    parser.add_argument("--level-s", type=float, default=20.0, help="open loop: seconds of arrivals per rate")
    parser.add_argument(
        "--config", default="configs/serve/smollm2-135m_routed.yaml", help="real mode: serve config"
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--warmup", type=int, default=64, help="requests sent (and not counted) before measuring"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default="router", help="router, student or teacher")
    parser.add_argument(
        "--no-stream", action="store_true", help="plain JSON responses instead of SSE streams"
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    stream = not args.no_stream
    procs: list[subprocess.Popen] = []
    try:
        env = {"RAGROUTE_API_KEY": ""}
        if args.mode == "gpu":
            from data_gen.inputs import load_inputs
            from ragroute.config import shared_pubmedqa_dev

            args.dataset = str(args.dataset or shared_pubmedqa_dev())
            items = load_inputs(args.dataset, None).questions
            config = gpu_serve_config(args, items, Path(tempfile.mkdtemp(prefix="serve-gpu-")))
        elif args.mode == "echo":
            up_port = free_port()
            procs.append(start(["-m", "serve.echo_upstream", "--port", str(up_port)]))
            upstream = f"http://127.0.0.1:{up_port}"
            wait_for(f"{upstream}/v1/models", procs[-1])
            config = echo_serve_config(f"{upstream}/v1")
        else:
            config = args.config
        port = free_port()
        procs.append(
            start(
                [
                    "-m",
                    "ragroute.cli",
                    "serve",
                    "--config",
                    config,
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                env,
            )
        )
        server = f"http://127.0.0.1:{port}"
        wait_for(f"{server}/ready", procs[-1])
        if args.mode == "gpu":
            result = gpu_sweep(args, server, [q.question for q in items])
            result.update(mode="gpu", date=time.strftime("%Y-%m-%d"), config=Path(config).read_text())
            print(json.dumps(result, indent=2))
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=2))
            return 0

        def load(url: str, model: str, n: int) -> dict:
            return asyncio.run(run_load(url, model, n, args.concurrency, args.max_tokens, stream))

        if args.mode == "echo":
            direct_url = f"{upstream}/v1/chat/completions"
            load(direct_url, "echo", args.warmup)
            direct = load(direct_url, "echo", args.requests)
        else:
            direct = asyncio.run(
                run_direct_backend(config, args.requests, args.concurrency, args.max_tokens, args.warmup)
            )
        served_url = f"{server}/v1/chat/completions"
        load(served_url, args.model, args.warmup)
        served = load(served_url, args.model if args.mode == "echo" else "teacher", args.requests)
        unloaded = None
        if args.mode == "echo":  # overhead without queueing: one client at a time
            one = lambda url, model: asyncio.run(run_load(url, model, 200, 1, args.max_tokens, stream))  # noqa: E731
            unloaded = round(one(served_url, args.model)["p50_ms"] - one(direct_url, "echo")["p50_ms"], 3)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {
        **{
            k: served[k]
            for k in ("requests", "errors", "concurrency", "throughput_rps", "p50_ms", "p95_ms", "p99_ms")
        },
        "overhead_p50_ms": round(served["p50_ms"] - direct["p50_ms"], 3),
        "overhead_p50_ms_concurrency_1": unloaded,
        "mode": args.mode,
        "stream": stream,
        "max_tokens": args.max_tokens,
        "served": served,
        "direct": direct,
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if served["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
