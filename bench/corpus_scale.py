"""Retrieval over a PubMed-sized corpus, built and served as a user would: `ragroute corpus build`, `ragroute index
build` / `index update`, then the full pipeline (retrieve ▶ rerank ▶ filter ▶ prompt) in a fresh process.

The corpus is the dataset's real abstracts (positions 0..n_real-1) plus synthetic distractors up to each size;
how their text and vectors are made: bench/corpus_scale_data.py. The distractors' embedding shards are pre-filled
before `ragroute index build` runs (a done shard is never recomputed), the real abstracts get their real MiniLM
embeddings, computed here by the pipeline's own encoder. Sizes grow: the first is built, each next one is added with
`ragroute index update` (so updates at scale are measured too).

Per size: build wall seconds, CPU-seconds and peak RSS of each command's whole process tree (psutil polling; per
stage from the build's log lines), index size on disk; then in a fresh process the pipeline over the store + index:
one question at a time p50/p99, that process's RSS, recall@1/@10 of each question's own abstract (also for the
--also-config pipelines); then, in another process, ANN recall@10 of the pipeline's dense index against exact
inner-product search over the same (memory-mapped) shard vectors, with an nprobe sweep. Every finished build step
and measurement is kept in WORKDIR/steps/, so a rerun continues where a failed one stopped. `--resume-check`: a
build SIGKILLed at each `--kill-at` log text in turn, rerun, compared with an uninterrupted one.

    nice .venv/bin/python bench/corpus_scale.py --docs 1000000,5000000,10000000 --workdir /tmp/rr-scale \\
        --json bench/results/retrieval_scale.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_scale_data import (  # noqa: E402
    TextSampler,
    VectorSampler,
    vector_stats,
    write_distractor_files,
    write_real_jsonl,
)
from measure_proc import Measured, run_measured  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("corpus_scale")
GB = 2**30
SEED = 0
PIPELINE_SET: list[
    str
] = []  # key=value overrides of the serving pipeline config (--set), also in the workers
TARGETS = {
    "build_peak_rss_gb": 8.0,
    "query_rss_gb": 4.0,
    "pipeline_p50_ms": 30.0,
    "pipeline_p99_ms": 100.0,
    "ann_recall_at_10": 0.95,
    "dev_r_at_1": 0.95,
}


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return f"{model}, {os.cpu_count()} CPUs, {mem_gb:.0f} GiB RAM"


def ragroute_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ragroute.cli", *args]


def child_env() -> dict:
    # The child imports this checkout's ragroute and index packages, as `python -m` from the repo root would.
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}


def disk_gb(path: Path, rows: int | None = None) -> float:
    """Bytes under ``path``; with ``rows``, embedding shards beyond those rows (pre-filled for a later size) are
    not counted."""
    last_shard = None if rows is None else -(-rows // ROWS_PER_SHARD) - 1

    def counted(f: Path) -> bool:
        if not f.is_file():
            return False
        if last_shard is not None and f.name.startswith("shard_") and f.parent.name == "embeddings":
            return int(f.name[6:12]) <= last_shard
        return True

    return sum(f.stat().st_size for f in path.rglob("*") if counted(f)) / GB


def real_vectors(dataset: str, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM embeddings of the dataset's abstracts (as the index build embeds them) and of its questions (as the
    pipeline encodes them), cached in the work directory."""
    cache = work / "real_vectors.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["docs"], saved["questions"]
    from ragroute.rag.corpus import load_corpus, load_questions
    from ragroute.rag.dense import DenseEncoder
    from ragroute.rag.store import indexed_text

    docs = load_corpus(dataset)
    encoder = DenseEncoder()
    started = time.perf_counter()
    doc_vectors = encoder.encode_documents([indexed_text(d.title, d.text) for d in docs])
    question_vectors = encoder.encode_queries([q.question for q in load_questions(dataset).items])
    log.info("embedded %d real abstracts + questions in %.0f s", len(docs), time.perf_counter() - started)
    np.savez(cache, docs=doc_vectors, questions=question_vectors)
    return doc_vectors, question_vectors


ROWS_PER_SHARD = 100_000  # index config rows_per_shard (the default); set from --index-config in main


def rows_per_shard(index_config: str) -> int:
    import yaml

    return int((yaml.safe_load(Path(index_config).read_text()) or {}).get("rows_per_shard", 100_000))


def write_shard(directory: Path, k: int, vectors: np.ndarray) -> None:
    """Shard ``k`` in the documented format of ragroute/rag/shards.py (written independently of that module on
    purpose: the format is a contract a user's own pipeline may pre-fill): ``shard_00000k.npy`` (float16, unit
    rows), then the done marker ``shard_00000k.done`` = {"rows": n}, each through a temporary file + rename."""
    tmp = directory / f".bench_shard_{k:06d}.npy"
    np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float16))
    os.replace(tmp, directory / f"shard_{k:06d}.npy")
    tmp_marker = directory / f".bench_shard_{k:06d}.done"
    tmp_marker.write_text(json.dumps({"rows": int(len(vectors))}))
    os.replace(tmp_marker, directory / f"shard_{k:06d}.done")


def prefill_shards(index_dir: Path, first: int, stop: int, real: np.ndarray, sampler: VectorSampler) -> float:
    """Writes done shards for rows first..stop-1 (the real vectors for rows < len(real), synthetic ones after) into
    INDEX_DIR/embeddings/; returns seconds. ``first`` must start a shard. info.json is left to the build."""
    directory = index_dir / "embeddings"
    directory.mkdir(parents=True, exist_ok=True)
    assert first % ROWS_PER_SHARD == 0, "sizes must be multiples of the shard size"
    started = time.perf_counter()
    for k in range(first // ROWS_PER_SHARD, -(-stop // ROWS_PER_SHARD)):
        lo, hi = k * ROWS_PER_SHARD, min(stop, (k + 1) * ROWS_PER_SHARD)
        marker = directory / f"shard_{k:06d}.done"
        if marker.is_file() and json.loads(marker.read_text())["rows"] == hi - lo:
            continue
        block = sampler.block(lo, hi - lo, SEED)
        n_real = max(0, min(len(real), hi) - lo)
        block[:n_real] = real[lo : lo + n_real].astype(np.float16)
        write_shard(directory, k, block)
    return time.perf_counter() - started


def measured_row(m: Measured) -> dict:
    return {
        "s": round(m.seconds, 1),
        "cpu_s": round(m.cpu_s, 1),
        "peak_rss_gb": round(m.peak_rss_bytes / GB, 2),
        "rc": m.returncode,
    }


def stage_peaks(m: Measured, markers: dict[str, tuple[str, ...]]) -> dict[str, dict]:
    """Seconds and peak RSS of each stage, from the log line that starts it (the first of its needles to appear)
    to the start of the next stage."""
    found = {
        name: [t for n in needles if (t := m.first_line(n)) is not None] for name, needles in markers.items()
    }
    starts = sorted((min(ts), name) for name, ts in found.items() if ts)
    # Before the first stage: startup, and for an update the store update (its log line comes at its end).
    starts.insert(0, (0.0, "start"))
    out = {}
    for i, (t, name) in enumerate(starts):
        stop = starts[i + 1][0] if i + 1 < len(starts) else m.seconds
        out[name] = {"s": round(stop - t, 1), "peak_rss_gb": round(m.peak_between(t, stop) / GB, 2)}
    return out


# ------------------------------------------------------------------------------------------------ serving side


def serve_worker(store: Path, index: Path, config: str, dataset: str, out: Path) -> None:
    """In its own process: the full pipeline over the store + index, one question at a time."""
    import psutil

    from ragroute.rag.corpus import load_questions
    from ragroute.rag.pipeline import RAGPipeline, load_pipeline_config

    questions = load_questions(dataset).items
    started = time.perf_counter()
    pipeline = RAGPipeline.from_config(
        load_pipeline_config(config, [f"corpus={store}", f"index={index}", *PIPELINE_SET])
    )
    pipeline.warmup()
    startup_s = time.perf_counter() - started
    latencies, ranks, stages = [], [], {}
    for q in questions:
        t0 = time.perf_counter()
        prepared = pipeline.prepare(q.question)
        latencies.append(time.perf_counter() - t0)
        ids = [d.id for d in prepared.docs]
        ranks.append(ids.index(q.gold_doc_id) if q.gold_doc_id in ids else None)
        for stage, seconds in prepared.timings.items():
            stages.setdefault(stage, []).append(seconds)
    ms = np.array(latencies) * 1000
    result = {
        "n_questions": len(questions),
        "startup_s": round(startup_s, 1),
        "pipeline_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "pipeline_p99_ms": round(float(np.percentile(ms, 99)), 2),
        "stage_p50_ms": {s: round(float(np.median(v)) * 1000, 3) for s, v in stages.items()},
        "query_rss_gb": round(psutil.Process().memory_info().rss / GB, 3),
        **rss_split(),
        "dev_r_at_1": sum(r == 0 for r in ranks) / len(ranks),
        "dev_r_at_10": sum(r is not None and r < 10 for r in ranks) / len(ranks),
        "final_n": len(prepared.docs),
    }
    out.write_text(json.dumps(result, indent=2))


def rss_split() -> dict[str, float]:
    """RSS split as the kernel counts it: anonymous (the process's own memory) vs file-backed (pages of the
    memory-mapped store and index files, shared with and reclaimable as page cache), plus the peak."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024 / GB
    return {
        "query_rss_anon_gb": round(fields.get("RssAnon", 0), 3),
        "query_rss_file_gb": round(fields.get("RssFile", 0), 3),
        "query_peak_rss_gb": round(fields.get("VmHWM", 0), 3),
    }


def exact_top_k(
    shard_dir: Path, rows: int, queries: np.ndarray, k: int, live: np.ndarray | None
) -> np.ndarray:
    """Exact inner-product top-k positions per query over the memory-mapped shards, one shard at a time."""
    from ragroute.rag.shards import EmbeddingShards

    shards = EmbeddingShards(shard_dir, rows)
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for s in range(shards.n_shards):
        block = np.asarray(shards.shard(s), dtype=np.float32)
        first = s * shards.rows_per_shard
        scores = queries @ block.T
        if live is not None:
            scores[:, ~live[first : first + len(block)]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, top, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, top + first], axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, axis=1), np.take_along_axis(cand_i, keep, axis=1)
    return best_i


def ann_worker(store: Path, index: Path, config: str, dataset: str, out: Path, k: int = 10) -> None:
    """In its own process: the dense retriever of a built index (FAISS candidates + exact refine from the shards,
    as the pipeline searches it) against exact inner-product search over every shard vector, for the dataset's
    questions encoded by the pipeline's own query encoder. Also FAISS alone (no refine)."""
    from ragroute.rag.corpus import load_questions
    from ragroute.rag.pipeline import RAGPipeline, load_pipeline_config
    from ragroute.rag.shards import EMBEDDINGS_DIR

    pipeline = RAGPipeline.from_config(
        load_pipeline_config(config, [f"corpus={store}", f"index={index}", *PIPELINE_SET, "retriever=dense"])
    )
    live = pipeline.corpus.live_mask()
    ann = pipeline.store.dense()  # the pipeline's own dense index: FAISS candidates + exact refine
    encoder = ann.encoder
    questions = [q.question for q in load_questions(dataset).items]
    vectors = encoder.encode_queries(questions)
    started = time.perf_counter()
    found = [positions for positions, _ in ann.search(questions, k)]
    ann_ms = (time.perf_counter() - started) / len(questions) * 1000
    _, raw = ann.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    started = time.perf_counter()
    exact = exact_top_k(index / EMBEDDINGS_DIR, len(live), vectors, k, None if live.all() else live)
    exact_s = time.perf_counter() - started
    sweep = nprobe_sweep(ann, questions, k, exact)
    peer = (
        exact_in_memory_ms(index / EMBEDDINGS_DIR, len(live), vectors[:50]) if len(live) <= 2_000_000 else {}
    )

    def recall(got) -> float:  # noqa: ANN001
        hits = sum(len(set(map(int, g[:k])) & set(map(int, e))) for g, e in zip(got, exact, strict=True))
        return round(hits / (k * len(questions)), 4)

    out.write_text(
        json.dumps(
            {
                "ann_recall_at_10": recall(found),
                "faiss_only_recall_at_10": recall(raw),
                "ann_factory": pipeline.store.built["dense"]["factory"],
                "ann_nprobe": ann_nprobe(ann.index),
                "ann_refine_k": ann.refine_k,
                "ann_search_ms_per_q": round(ann_ms, 2),
                "exact_batch_s": round(exact_s, 1),
                "ann_n_queries": len(questions),
                "ann_nprobe_sweep": sweep,
                **peer,
            },
            indent=2,
        )
    )


def nprobe_sweep(ann, questions: list[str], k: int, exact: np.ndarray) -> list[dict]:  # noqa: ANN001
    """ANN recall@k and search ms per question (FAISS + exact refine, as the pipeline searches) at other nprobe
    values than the configured one: what the knob costs and buys on these vectors."""
    import faiss

    ivf = faiss.try_extract_index_ivf(ann.index)
    if ivf is None:
        return []
    configured, rows = int(ivf.nprobe), []
    for nprobe in sorted({configured, 64, 128, 256} & set(range(1, ivf.nlist + 1))):
        ivf.nprobe = nprobe
        started = time.perf_counter()
        found = [positions for positions, _ in ann.search(questions, k)]
        ms = (time.perf_counter() - started) / len(questions) * 1000
        hits = sum(len(set(map(int, f[:k])) & set(map(int, e))) for f, e in zip(found, exact, strict=True))
        rows.append(
            {
                "nprobe": nprobe,
                "recall_at_10": round(hits / (k * len(questions)), 4),
                "ms_per_q": round(ms, 2),
            }
        )
    ivf.nprobe = configured
    return rows


def exact_in_memory_ms(shard_dir: Path, rows: int, queries: np.ndarray) -> dict:
    """The peer: today's DenseIndex (every embedding as one float32 matrix in memory, exact search per question),
    timed one question at a time over the same vectors."""
    from ragroute.rag.shards import EmbeddingShards

    shards = EmbeddingShards(shard_dir, rows)
    matrix = np.concatenate([np.asarray(shards.shard(k), dtype=np.float32) for k in range(shards.n_shards)])
    latencies = []
    for q in queries:
        started = time.perf_counter()
        scores = q[None, :] @ matrix.T
        top = np.argpartition(-scores[0], 9)[:10]
        top[np.argsort(-scores[0][top])]
        latencies.append(time.perf_counter() - started)
    return {
        "peer_exact_dense_p50_ms": round(float(np.median(latencies)) * 1000, 2),
        "peer_exact_dense_matrix_gb": round(matrix.nbytes / GB, 2),
    }


def ann_nprobe(index) -> int | None:  # noqa: ANN001
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    return None if ivf is None else int(ivf.nprobe)


def run_worker(kind: str, args: list[str], work: Path) -> dict:
    out = work / f"{kind}.json"
    out.unlink(missing_ok=True)
    sets = [f"--set={kv}" for kv in PIPELINE_SET]
    cmd = [sys.executable, __file__, f"--worker={kind}", *args, *sets, f"--worker-out={out}"]
    m = run_measured(cmd, work / f"{kind}.log", env=child_env(), nice=0)
    if m.returncode != 0:
        raise RuntimeError(f"{kind} worker failed (rc {m.returncode}); see {work / f'{kind}.log'}")
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------ build side


def grow_to(work: Path, size: int, previous: int, real_docs: list, text: TextSampler) -> list[Path]:
    """JSONL input files for rows previous..size-1 (the real abstracts first when previous == 0)."""
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    files = []
    if previous == 0:
        real_file = inputs / "real.jsonl"
        write_real_jsonl(real_file, real_docs)
        files.append(real_file)
        previous = len(real_docs)
    started = time.perf_counter()
    files += list(write_distractor_files(inputs, text, previous, size, SEED))
    log.info("generated rows %d..%d in %.0f s", previous, size, time.perf_counter() - started)
    return files


def measured_step(work: Path, name: str, cmd: list[str]) -> dict:
    """Runs one user command, measured; its result is kept in work/steps/NAME.json, so a rerun of the benchmark
    after a failure does not redo (or re-measure) finished builds."""
    saved = work / "steps" / f"{name}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    m = run_measured(cmd, work / f"{name}.log", env=child_env())
    if m.returncode:
        raise RuntimeError(f"{name} failed (rc {m.returncode}), see {work / f'{name}.log'}")
    row = {**measured_row(m), "stages": stage_peaks(m, INDEX_STAGE_MARKERS), "cmd": " ".join(cmd[1:])}
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps(row, indent=2))
    return row


def build_step(work: Path, size: int, previous: int, files: list[Path], index_args: list[str]) -> dict:
    """First size: `corpus build` then `index build`; later sizes: `index update` with the new files."""
    store, index, inputs = str(work / "store"), str(work / "index"), [str(f) for f in files]
    if previous == 0:
        return {
            "corpus_build": measured_step(
                work,
                f"corpus_build_{size}",
                ragroute_cmd("corpus", "build", "--input", *inputs, "--out", store),
            ),
            "index_build": measured_step(
                work,
                f"index_build_{size}",
                ragroute_cmd("index", "build", "--store", store, "--out", index, *index_args),
            ),
        }
    cmd = ragroute_cmd("index", "update", "--store", store, "--index", index, "--input", *inputs)
    return {"index_update": measured_step(work, f"index_update_{size}", cmd)}


# Stage -> log lines of index/index_build.py and index/dense_build.py that start it (the first one seen).
INDEX_STAGE_MARKERS = {
    "sparse": ("sparse index: adding rows",),
    "embed": ("embedding ",),
    "faiss_train": ("training ",),
    "faiss_add": ("trained in", "added "),
}


def size_breakdown(work: Path, rows: int) -> dict[str, float]:
    index = work / "index"
    parts = {
        p.name: round(disk_gb(p, rows), 3) if p.is_dir() else round(p.stat().st_size / GB, 3)
        for p in index.iterdir()
    }
    return {"store_gb": round(disk_gb(work / "store"), 3), **{f"index/{k}_gb": v for k, v in parts.items()}}


def measure_size(work: Path, config: str, also: list[str], dataset: str) -> dict:
    """The serving side of one size: the main pipeline config, each other config (keys prefixed by its name),
    then the ANN check."""
    store, index = work / "store", work / "index"
    common = [f"--store={store}", f"--index={index}", f"--dataset={dataset}"]
    row = run_worker("serve", [*common, f"--config={config}"], work)
    for other in also:
        served = run_worker("serve", [*common, f"--config={other}"], work)
        row[Path(other).stem] = served
    return {**row, **run_worker("ann", [*common, f"--config={config}"], work)}


def cached_measure(work: Path, size: int, config: str, also: list[str], dataset: str) -> dict:
    """measure_size, kept in work/steps/ per size and serving settings (a rerun that grows the corpus does not
    re-measure the sizes it already measured with the same settings)."""
    import hashlib

    key = hashlib.sha256(json.dumps([config, also, dataset, PIPELINE_SET]).encode()).hexdigest()[:12]
    saved = work / "steps" / f"measure_{size}_{key}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    row = measure_size(work, config, also, dataset)
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps(row, indent=2))
    return row


def run(
    sizes: list[int],
    work: Path,
    dataset: str,
    index_args: list[str],
    config: str,
    also: list[str],
    out: Path | None,
    keep_inputs: bool,
) -> dict:
    from ragroute.rag.corpus import load_corpus

    work.mkdir(parents=True, exist_ok=True)
    real_docs = load_corpus(dataset)
    doc_vectors, question_vectors = real_vectors(dataset, work)
    text = TextSampler([d.text for d in real_docs])
    vectors = VectorSampler(doc_vectors, seed=SEED)
    result = {
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "dataset": dataset,
        "index_args": index_args,
        "pipeline_config": config,
        "other_pipeline_configs": also,
        "pipeline_set": PIPELINE_SET,
        "n_real": len(real_docs),
        "distractor_vectors": {
            **vectors.describe(),
            **vector_stats(doc_vectors, vectors.block(0, 5000, SEED + 1), question_vectors),
        },
        "targets": TARGETS,
        "rows": [],
    }
    previous, build_s, build_peak = 0, 0.0, 0.0
    for size in sizes:
        names = [f"corpus_build_{size}", f"index_build_{size}"] if previous == 0 else [f"index_update_{size}"]
        built = all((work / "steps" / f"{name}.json").is_file() for name in names)
        files = (
            [] if built else grow_to(work, size, previous, real_docs, text)
        )  # inputs are deleted once built
        prefill_s = prefill_shards(work / "index", previous, size, doc_vectors, vectors)
        step = build_step(work, size, previous, files, index_args)
        if not keep_inputs:
            for f in files:
                f.unlink()
        build_s += sum(s["s"] for s in step.values())
        build_peak = max(build_peak, *(s["peak_rss_gb"] for s in step.values()))
        row = {
            "docs": size,
            "machine": result["machine"],
            "date": result["date"],
            "build_s": round(build_s, 1),
            "build_peak_rss_gb": build_peak,
            "index_disk_gb": round(disk_gb(work / "index", size), 3),
            **cached_measure(work, size, config, also, dataset),
            "steps": step,
            "prefill_s": round(prefill_s, 1),
            "disk": size_breakdown(work, size),
        }
        result["rows"].append(row)
        result.update({k: v for k, v in row.items() if k not in ("steps", "disk")})
        previous = size
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
        log.info("size %d: %s", size, json.dumps({k: v for k, v in row.items() if k != "steps"}))
    return result


# ------------------------------------------------------------------------------------------------ killed build


def index_fingerprint(index: Path) -> dict[str, str]:
    """sha256 of every file of the dense side (embedding shards, info, FAISS index). The sparse side is compared
    by its search results instead: tantivy names segment files by random UUIDs, so equal indexes differ by name."""
    import hashlib

    return {
        str(f.relative_to(index)): hashlib.sha256(f.read_bytes()).hexdigest()[:16]
        for f in sorted(index.rglob("*"))
        if f.is_file() and f.name != "manifest.json" and "sparse" not in f.relative_to(index).parts
    }


def build_attempts(work: Path, name: str, cmd: list[str], markers: list[str]) -> list[dict]:
    """Runs the build once per kill marker (SIGKILL of its process tree when the marker is logged), then once to
    the end; kept in work/steps/resume_NAME.json so a rerun of the check only redoes the comparison."""
    saved = work / "steps" / f"resume_{name}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    attempts: list[dict] = []
    for marker in [*markers, None]:
        m = run_measured(cmd, work / f"{name}_{len(attempts)}.log", env=child_env(), kill_when=marker)
        attempts.append(
            {"killed_at": marker if m.killed else None, "rc": m.returncode, "s": round(m.seconds, 1)}
        )
        if marker and not m.killed:
            attempts[-1]["note"] = "the marker never appeared: the build finished before it could be killed"
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps(attempts, indent=2))
    return attempts


def resume_check(
    work: Path,
    real_docs: list,
    text: TextSampler,
    real: np.ndarray,
    sampler: VectorSampler,
    index_args: list[str],
    config: str,
    dataset: str,
    kill_markers: list[str],
) -> dict:
    """Builds one index uninterrupted and one killed (SIGKILL of the whole process tree) at each marker in turn,
    then rerun to the end; compares the dense files byte for byte and what every question retrieves (BM25 top 50
    with scores, dense top 50 with scores, the pipeline's final documents). The corpus is one pre-filled shard
    plus a short second one that the build embeds itself (on the CPU), so a kill can land mid-embedding too."""
    n_docs = ROWS_PER_SHARD + 300
    files = grow_to(work, n_docs, 0, real_docs, text)
    store = work / "store"
    if not store.is_dir():
        cmd = ragroute_cmd("corpus", "build", "--input", *map(str, files), "--out", str(store))
        measured_step(work, "corpus_build", cmd)
    runs = {}
    for name, markers in (("reference", []), ("killed", kill_markers)):
        index = work / f"index_{name}"
        if not (work / "steps" / f"resume_{name}.json").is_file():
            shutil.rmtree(index, ignore_errors=True)
            prefill_shards(index, 0, ROWS_PER_SHARD, real, sampler)
        cmd = ragroute_cmd("index", "build", "--store", str(store), "--out", str(index), *index_args)
        attempts = build_attempts(work, name, cmd, markers)
        runs[name] = {"attempts": attempts, "files": index_fingerprint(index)}
        common = [f"--store={store}", f"--index={index}", f"--config={config}", f"--dataset={dataset}"]
        runs[name]["retrieved"] = run_worker("retrieved", common, work)
    ref, killed = runs["reference"]["files"], runs["killed"]["files"]
    different = sorted(k for k in ref.keys() | killed.keys() if ref.get(k) != killed.get(k))
    same = {
        part: runs["reference"]["retrieved"][part] == runs["killed"]["retrieved"][part]
        for part in ref_parts()
    }
    return {
        "docs": n_docs,
        "attempts": runs["killed"]["attempts"],
        "reference_attempts": runs["reference"]["attempts"],
        "dense_files_compared": sorted(ref),
        "dense_files_different": different,
        "same_retrieved": same,
        "same_index": not different and all(same.values()),
    }


def ref_parts() -> tuple[str, ...]:
    return ("bm25_top50", "dense_top50", "pipeline_docs")


def retrieved_worker(store: Path, index: Path, config: str, dataset: str, out: Path) -> None:
    """What every question retrieves from an index: BM25 and dense top 50 (positions, scores) and the
    pipeline's final documents (for comparing two builds)."""
    from ragroute.rag.corpus import load_questions
    from ragroute.rag.pipeline import RAGPipeline, load_pipeline_config

    pipeline = RAGPipeline.from_config(
        load_pipeline_config(config, [f"corpus={store}", f"index={index}", *PIPELINE_SET])
    )
    questions = [q.question for q in load_questions(dataset).items]

    def listed(results) -> list:  # noqa: ANN001
        return [
            [(int(d), round(float(s), 5)) for d, s in zip(docs, scores, strict=True)]
            for docs, scores in results
        ]

    retrieved = {
        "bm25_top50": listed(pipeline.store.bm25().search(questions, 50)),
        "dense_top50": listed(pipeline.store.dense().search(questions, 50)),
        "pipeline_docs": [
            [(d.id, round(d.score, 5)) for d in p.docs] for p in pipeline.prepare_batch(questions)
        ],
    }
    out.write_text(json.dumps(retrieved))


def run_resume_check(args: argparse.Namespace) -> dict:
    from ragroute.rag.corpus import load_corpus

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    real_docs = load_corpus(args.dataset)
    doc_vectors, _ = real_vectors(args.dataset, work)
    return resume_check(
        work / "resume",
        real_docs,
        TextSampler([d.text for d in real_docs]),
        doc_vectors,
        VectorSampler(doc_vectors, seed=SEED),
        ["--config", args.index_config, *args.index_set],
        args.config,
        args.dataset,
        [m for m in args.kill_at.split("|") if m],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--docs",
        default="1000000",
        help="comma-separated corpus sizes, growing (multiples of the embedding shard size)",
    )
    from ragroute.config import shared_pubmedqa_dev

    parser.add_argument("--dataset", default=str(shared_pubmedqa_dev()), help="PubMedQA-format json")
    parser.add_argument(
        "--workdir", default="/tmp/rr-scale/run", help="store, index, inputs and logs go here"
    )
    parser.add_argument("--index-config", default=str(REPO / "configs/index/pubmed-ivfpq.yaml"))
    parser.add_argument(
        "--config",
        default=str(REPO / "configs/pipeline/v3.1.yaml"),
        help="pipeline config the serving side uses (corpus and index are set to the built ones)",
    )
    parser.add_argument(
        "--also-config",
        default=str(REPO / "configs/pipeline/large-corpus.yaml"),
        help="comma-separated other pipeline configs measured the same way (reported under their names)",
    )
    parser.add_argument(
        "--index-set",
        default="",
        help="extra `ragroute index build` options, space-separated (e.g. '--factory IVF1024,PQ48')",
    )
    parser.add_argument(
        "--set", action="append", default=[], help="serving pipeline override key=value (repeatable)"
    )
    parser.add_argument("--json", help="write the results here (after every size)")
    parser.add_argument("--keep-inputs", action="store_true", help="keep the generated JSONL files")
    parser.add_argument(
        "--resume-check",
        action="store_true",
        help="instead of the sizes: the killed-and-resumed build check (in WORKDIR/resume)",
    )
    parser.add_argument(
        "--kill-at",
        default="",
        help="'|'-separated log texts; the build is killed when each appears (first run: at the first, ...)",
    )
    parser.add_argument("--worker", choices=["serve", "ann", "retrieved"], help=argparse.SUPPRESS)
    for name in ("worker-out", "store", "index"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global ROWS_PER_SHARD
    ROWS_PER_SHARD = rows_per_shard(args.index_config)
    PIPELINE_SET.extend(args.set)
    args.index_set = args.index_set.split()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.worker == "serve":
        serve_worker(Path(args.store), Path(args.index), args.config, args.dataset, Path(args.worker_out))
        return 0
    if args.worker == "ann":
        ann_worker(Path(args.store), Path(args.index), args.config, args.dataset, Path(args.worker_out))
        return 0
    if args.worker == "retrieved":
        retrieved_worker(Path(args.store), Path(args.index), args.config, args.dataset, Path(args.worker_out))
        return 0
    if args.resume_check:
        check = run_resume_check(args)
        print(json.dumps(check, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(check, indent=2) + "\n")
        return 0
    sizes = [int(s) for s in args.docs.split(",")]
    result = run(
        sizes,
        Path(args.workdir),
        args.dataset,
        ["--config", args.index_config, *args.index_set],
        args.config,
        [c for c in args.also_config.split(",") if c],
        Path(args.json) if args.json else None,
        args.keep_inputs,
    )
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
