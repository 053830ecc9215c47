"""``--executor ray``: the same answering loop as the local executor, spread over a Ray cluster with Ray Data.

    questions (driver) ─▶ one block per batch ─▶ PrepareStage actors (retrieve ▶ rerank ▶ filter ▶ prompt)
      ─▶ EngineStage actor pool (ragroute's engine)  |  ray.data.llm vLLM processor (GPU workers)
      ─▶ each block streamed to the driver when done ─▶ build_record ─▶ JsonlWriter (append + fsync per batch)

The driver loads and checks the inputs (so bad input is counted exactly as in the local run), skips the ids
already written, and writes every record as soon as its row streams back: a run killed at any point keeps
every record it wrote, and the rerun skips them. Rows travel as JSON strings (the question, the prepared
prompt, the generation result) so that nested fields (messages, logprobs) survive Arrow blocks unchanged.
Ray restarts a dead actor and resubmits its batch (Ray Data's defaults for actor pools: ``max_restarts=-1``,
``max_task_retries=-1``); an exception raised by ragroute code is not retried and ends the run, as locally.
Records come back in completion order, not input order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ragroute.engines.base import GenerationRequest, GenerationResult, SamplingConfig
from ragroute.errors import UserError
from ragroute.rag.corpus import Document, QAItem
from ragroute.records import JsonlWriter

log = logging.getLogger(__name__)


def require_ray() -> None:
    """Fail with a clear message (exit 2) when Ray Data is not installed."""
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"--executor ray needs Ray Data, which is not importable here ({exc}); install the extra: "
            "pip install -e '.[ray]'"
        ) from None


# Ray starts its worker processes at nice 15 (its ``worker_niceness`` setting) to keep the raylet responsive.
# On a machine shared with other work that starves the engine actor, and the vLLM processes it starts, behind
# every normal-priority process: on the shared 2-core VM the engine actor took 365 s to start against 64 s for
# the same engine in the local executor at the same load. A Ray instance started for one run serves that run
# alone, so its workers get the driver's priority, as the local executor has. (Read when the instance starts;
# a cluster that is joined keeps its own setting: RAY_worker_niceness=0 ray start ... gives it this one.)
LOCAL_RAY_ENV = {"RAY_worker_niceness": "0"}


def local_ray_env() -> None:
    """Set :data:`LOCAL_RAY_ENV` for a Ray instance this process starts (values already set are kept)."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)


@contextmanager
def ray_cluster(address: str | None) -> Iterator[None]:
    """Join the cluster at ``address`` (default: $RAY_ADDRESS, else a Ray instance on this machine), unless
    this process is already connected; disconnect afterwards only from a connection made here."""
    import ray

    if ray.is_initialized():
        yield
        return
    local_ray_env()
    ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def prepared_to_json(prepared: Any) -> str:
    """What the driver needs of a ``PreparedPrompt`` (the documents' texts only where citations are attributed on
    the driver)."""
    docs = [{"id": d.id, "title": d.title, "score": float(d.score), "text": d.text} for d in prepared.docs]
    return json.dumps({"question": prepared.question, "docs": docs, "messages": prepared.messages,
                       "timings": prepared.timings})


def prepared_from_json(text: str) -> Any:
    from ragroute.rag.pipeline import PreparedPrompt, RetrievedDoc

    data = json.loads(text)
    docs = [RetrievedDoc(id=d["id"], title=d["title"], text=d.get("text", ""), score=d["score"]) for d in data["docs"]]
    return PreparedPrompt(question=data["question"], docs=docs, messages=data["messages"], timings=data["timings"])


def result_to_json(result: GenerationResult | str) -> str:
    return json.dumps(result if isinstance(result, str) else dataclasses.asdict(result))


def result_from_json(text: str) -> GenerationResult | str:
    data = json.loads(text)
    if isinstance(data, str):
        return data
    if data["logprobs"] is not None:  # JSON object keys are strings; token ids are ints
        data["logprobs"] = [{int(tok): lp for tok, lp in step.items()} for step in data["logprobs"]]
    return GenerationResult(**data)


class PrepareStage:
    """Ray Data actor: builds the RAG pipeline once (indexes from ``index_dir`` or built), then prepares
    batches of questions."""

    def __init__(self, pipeline_cfg: Any, corpus: list[Document] | str) -> None:
        from ragroute.rag.pipeline import RAGPipeline, open_corpus

        # A corpus store travels as its directory: each actor memory-maps it (shared page cache, no copy).
        self.pipeline = RAGPipeline(pipeline_cfg, open_corpus(corpus) if isinstance(corpus, str) else corpus)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        items = [QAItem(**json.loads(text)) for text in batch["item"]]
        prepared = self.pipeline.prepare_batch([item.question for item in items])
        return {"item": list(batch["item"]), "prepared": [prepared_to_json(p) for p in prepared]}


class EngineStage:
    """Ray Data actor: one loaded ragroute engine (vllm, vllm-cpu, transformers, openai) answering batches."""

    def __init__(self, spec: Any, engine_cfg: Any, sampling: SamplingConfig, shares_node: bool = False) -> None:
        import ray

        from ragroute.engines.base import create_engine

        if shares_node and engine_cfg.name == "vllm" and not ray.get_gpu_ids():
            # vLLM's CPU build pins its compute threads to cores it picks alone (``auto``: the first cores of
            # the NUMA node), the same ones in every replica of a node; unpinned, each replica runs the
            # OMP_NUM_THREADS that Ray sets from its num_cpus, and the OS spreads the replicas over the cores.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        self.engine = create_engine(spec, engine_cfg)
        self.sampling = sampling

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from data_gen.generate import generate_isolated

        requests = [GenerationRequest(messages=json.loads(text)["messages"]) for text in batch["prepared"]]
        started = time.perf_counter()
        results = generate_isolated(self.engine, requests, self.sampling)
        share = (time.perf_counter() - started) / len(requests)
        return {"item": list(batch["item"]), "prepared": list(batch["prepared"]),
                "result": [result_to_json(r) for r in results], "generation_share": [share] * len(requests)}

    def __del__(self) -> None:
        # Ray Data deletes the UDF when it retires the actor gracefully: stop the engine's own processes
        # (vLLM's engine core and workers) rather than leave them to outlive the actor.
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def engine_generation(ds: Any, cfg: Any, spec: Any, sampling: SamplingConfig) -> Any:
    import ray.data

    return ds.map_batches(
        EngineStage,
        fn_constructor_kwargs={"spec": spec, "engine_cfg": cfg.engine, "sampling": sampling,
                               "shares_node": cfg.ray_actors > 1},
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=cfg.ray_actors),
        num_cpus=cfg.ray_cpus_per_actor,
        num_gpus=cfg.ray_gpus_per_actor or None,
    )


def ray_llm_generation(ds: Any, cfg: Any, spec: Any, sampling: SamplingConfig) -> Any:
    """Generation by ``ray.data.llm``'s vLLM processor: chat template, tokenization, an async vLLM engine per
    replica (``tensor_parallel_size`` GPUs each), detokenization."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from ragroute.engines.vllm_engine import sampling_kwargs, vllm_engine_kwargs

    engine_kwargs = vllm_engine_kwargs(spec, cfg.engine, on_gpu=True)
    model_source = engine_kwargs.pop("model")
    config = vLLMEngineProcessorConfig(
        model_source=model_source,
        engine_kwargs=engine_kwargs,
        batch_size=cfg.batch_size,
        concurrency=cfg.ray_actors,
        should_continue_on_error=True,
    )
    params = sampling_kwargs(sampling, spec.shape_only)

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        return {"item": row["item"], "prepared": row["prepared"],
                "messages": json.loads(row["prepared"])["messages"], "sampling_params": params}

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        return {"item": row["item"], "prepared": row["prepared"],
                "result": result_to_json(result_from_ray_llm(row, sampling.max_tokens, spec.shape_only))}

    return build_processor(config, preprocess=preprocess, postprocess=postprocess)(ds)


def result_from_ray_llm(row: dict[str, Any], max_tokens: int, shape_only: bool = False) -> GenerationResult:
    """A ``GenerationResult`` from a row of ray.data.llm's vLLM stage (``generated_text``, token counts,
    ``logprobs`` as {token_id: {logprob, rank, decoded_token}} per step)."""
    logprobs = row.get("logprobs")
    completion_tokens = int(row["num_generated_tokens"])
    return GenerationResult(
        text=row["generated_text"],
        prompt_tokens=int(row["num_input_tokens"]),
        completion_tokens=completion_tokens,
        finish_reason="length" if completion_tokens >= max_tokens else "stop",
        total_s=float(row.get("time_taken_llm") or 0.0),
        token_ids=[int(t) for t in row.get("generated_tokens") or []],
        logprobs=None if logprobs is None else [
            {int(tok): float(info["logprob"]) for tok, info in step.items()} for step in logprobs
        ],
        shape_only=shape_only,
    )


def question_blocks(items: list[QAItem], batch_size: int) -> Any:
    """The questions as a dataset of one block per batch (the local executor's batches, in order). A map task
    answers its whole input block before it returns a row, and ``from_items`` makes up to 200 blocks (a large
    run's blocks hold thousands of questions, with batches that straddle them), so the records would reach the
    driver (and the file) a block, not a batch, at a time."""
    import pyarrow as pa
    import ray.data

    rows = [{"item": json.dumps(dataclasses.asdict(item))} for item in items]
    return ray.data.from_arrow([pa.Table.from_pylist(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)])


def streamed_blocks(ds: Any) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``ds``, block by block, each as soon as it reaches the driver. (``iter_rows`` prefetches one
    block: a finished batch would wait there, unwritten, until the next one is answered.)"""
    from ray.data.block import BlockAccessor

    for block in ds.iter_batches(batch_size=None, batch_format=None, prefetch_batches=0):
        yield list(BlockAccessor.for_block(block).iter_rows(public_row_format=True))


def warn_if_unschedulable(cfg: Any) -> None:
    """Ray Data waits (silently, for an autoscaler) when the pools ask for more than the cluster has: say so."""
    import ray

    total = ray.cluster_resources()
    cpus = cfg.ray_prepare_actors * cfg.ray_prepare_cpus
    gpus = 0.0
    if cfg.ray_generation == "engine":
        cpus += cfg.ray_actors * cfg.ray_cpus_per_actor
        gpus = cfg.ray_actors * cfg.ray_gpus_per_actor
    else:
        gpus = cfg.ray_actors * cfg.engine.tensor_parallel_size
    if cpus > total.get("CPU", 0) or gpus > total.get("GPU", 0):
        log.warning("the Ray pools ask for %.1f CPUs and %.1f GPUs but the cluster has %.1f and %.1f: the run waits "
                    "until an autoscaler adds nodes (lower ray_actors / ray_cpus_per_actor otherwise)",
                    cpus, gpus, total.get("CPU", 0), total.get("GPU", 0))


def answer_with_ray(
    items: list[QAItem],
    corpus: list[Document],
    cfg: Any,
    spec: Any,
    sampling: SamplingConfig,
    writer: JsonlWriter,
    config_hash: str,
    on_done: Callable[[int], None] = lambda n: None,
) -> tuple[int, list[str]]:
    """Answer ``items`` on the Ray cluster; records are written on the driver as rows stream back. Returns
    (records written, problems), like :func:`data_gen.generate.answer_questions`."""
    import ray.data

    from data_gen.generate import RecordStamp, write_results

    written, problems = 0, []
    stamp = RecordStamp(spec.name, config_hash, cfg.attribute_citations)
    with ray_cluster(cfg.ray_address):
        warn_if_unschedulable(cfg)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = question_blocks(items, cfg.batch_size).map_batches(
            PrepareStage,
            fn_constructor_kwargs={"pipeline_cfg": cfg.pipeline,
                               "corpus": corpus if isinstance(corpus, list) else str(corpus.directory)},
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(size=cfg.ray_prepare_actors),
            num_cpus=cfg.ray_prepare_cpus,
        )
        generation = ray_llm_generation if cfg.ray_generation == "ray-llm" else engine_generation
        for rows in streamed_blocks(generation(ds, cfg, spec, sampling)):  # a block is one batch: one fsync
            results: list[GenerationResult | str] = [
                f"generation failed: {row['__inference_error__']}" if row.get("__inference_error__")  # ray.data.llm
                else result_from_json(row["result"]) for row in rows
            ]
            answered = [(QAItem(**json.loads(row["item"])), prepared_from_json(row["prepared"]), result)
                        for row, result in zip(rows, results, strict=True)]
            written += write_results(answered, writer, stamp, problems, rows[0].get("generation_share"))
            on_done(len(rows))
    return written, problems
