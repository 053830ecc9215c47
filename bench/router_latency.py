"""Router decision latency (one question, CPU) and batch throughput, against the plain scikit-learn path.

    .venv/bin/python bench/router_latency.py --router runs/router.skops
    .venv/bin/python bench/router_latency.py --teacher T.jsonl --student S.jsonl   # fits logreg_tfidf first

Questions (and their retrieval signals) come from the teacher records when given, else from the shared
PubMedQA dev set without signals. Peers measured in the same run: the fitted pipeline's own
``Pipeline.predict_proba`` on one question (what a naive integration calls) and the seed's regex heuristic.
Target: p99 <= 1 ms per decision. Prints one JSON object (and writes it with --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def time_each(fn, items, repeats: int) -> list[float]:
    samples = []
    for i in range(repeats):
        item = items[i % len(items)]
        start = time.perf_counter()
        fn(item)
        samples.append(time.perf_counter() - start)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--router", help="router file (skops)")
    parser.add_argument("--teacher", help="teacher records: questions + signals (and fitting data without --router)")
    parser.add_argument("--student", help="student records (to fit a router when --router is not given)")
    parser.add_argument("--config", default="configs/router/logreg_tfidf.yaml")
    parser.add_argument("--repeats", type=int, default=3000, help="single-question decisions to time")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    from ragroute.config import load_config
    from router.config import RouterConfig
    from router.features import retrieval_signals
    from router.models import HeuristicRouter
    from router.persist import load_router

    if args.router:
        bundle = load_router(args.router)
    elif args.teacher and args.student:
        from router.fit import fit_router
        from router.labels import build_labels

        cfg = load_config(RouterConfig, args.config)
        bundle = fit_router(build_labels(args.teacher, args.student, cfg.labels), cfg)
    else:
        parser.error("give --router, or --teacher and --student to fit one")

    if args.teacher:
        from ragroute.records import read_records

        records = read_records(args.teacher)
        questions = [r.question for r in records]
        signals = [retrieval_signals(r.doc_scores) for r in records]
    else:
        from ragroute.config import shared_pubmedqa_dev

        questions = [v["QUESTION"] for v in json.loads(shared_pubmedqa_dev().read_text()).values()]
        signals = [None] * len(questions)
    pairs = list(zip(questions, signals, strict=True))

    def routed(pair):
        return bundle.route(pair[0], pair[1])

    def pipeline(pair):
        return bundle.estimator.predict_proba(bundle.features([pair[0]], [pair[1]]))[:, 1]

    heuristic = HeuristicRouter()

    def regex(pair):
        return heuristic.score([pair[0]])

    results = {}
    for name, fn in (("router.route", routed), ("pipeline.predict_proba", pipeline), ("seed_regex", regex)):
        time_each(fn, pairs, args.warmup)
        results[name] = percentiles(time_each(fn, pairs, args.repeats))
    batch_times = []
    for _ in range(5):
        start = time.perf_counter()
        bundle.score(questions, signals)
        batch_times.append(time.perf_counter() - start)
    report = {
        "benchmark": "router_latency",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "router": {k: bundle.metadata.get(k) for k in ("model", "params", "n_train", "data_hash")},
        "single_question": results,
        "speedup_vs_pipeline_p50": results["pipeline.predict_proba"]["p50_ms"] / results["router.route"]["p50_ms"],
        "batch": {
            "questions": len(questions),
            "best_s": min(batch_times),
            "questions_per_s": len(questions) / min(batch_times),
        },
        "target": {"p99_ms": 1.0, "met": results["router.route"]["p99_ms"] <= 1.0},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
