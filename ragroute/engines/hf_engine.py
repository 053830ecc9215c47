"""Local generation with ``transformers``: the batch face (left-padded batches) and the streaming face (one
worker thread per model, tokens handed to the event loop as they come).

Both faces share the loading, the ``generate()`` settings, the EOS handling and the cut at stop strings, and
decode the same tokens the same way, so a greedy answer is the same text from either.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ragroute.engines.base import (
    Chunk,
    EngineConfig,
    EngineError,
    GenerationEngine,
    GenerationRequest,
    GenerationResult,
    Message,
    SamplingConfig,
    StreamingEngine,
    TokenCounter,
    template_options,
)
from ragroute.models import ModelSpec, load_causal_lm, load_tokenizer

log = logging.getLogger("ragroute.engines")


class _FirstTokenClock:
    """A stopping criterion that never stops: it only notes when the first new token exists (TTFT)."""

    def __init__(self) -> None:
        self.first_token_at: float | None = None

    def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001 - transformers' StoppingCriteria signature
        import torch

        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class _Cancelled:
    """A stopping criterion that stops when a timed-out or disconnected request sets ``event``."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001 - transformers' StoppingCriteria signature
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def truncate_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; the stop string itself is not returned."""
    cut = min((i for i in (text.find(s) for s in stops) if i != -1), default=-1)
    return (text[:cut], True) if cut != -1 else (text, False)


def load_model(model: ModelSpec, device: str) -> tuple[Any, Any, str]:
    """(tokenizer padded on the left, model in eval mode, device) for ``model``; device ``auto`` picks CUDA."""
    from ragroute.hardware import has_cuda

    tokenizer = load_tokenizer(model.tokenizer or model.path)
    tokenizer.padding_side = "left"  # decoder-only batching: pad on the left so answers line up
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device == "auto":
        device = "cuda" if has_cuda() else "cpu"
    return tokenizer, load_causal_lm(model.path, dtype=model.dtype).to(device).eval(), device


def prompt_text(tokenizer: Any, request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    return tokenizer.apply_chat_template(request.messages, tokenize=False, **template_options(request.messages))


def encode(tokenizer: Any, texts: list[str], device: str) -> Any:
    # Chat templates already carry their special tokens; plain prompts get none added either, as vLLM does.
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def generate_kwargs(sampling: SamplingConfig, tokenizer: Any, criteria: list[Any]) -> dict[str, Any]:
    """``model.generate`` keyword arguments for every :class:`SamplingConfig` option."""
    import torch
    from transformers import StoppingCriteriaList

    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_tokens,
        "min_new_tokens": sampling.min_tokens,
        "do_sample": sampling.temperature > 0,
        "pad_token_id": tokenizer.pad_token_id,
        "stopping_criteria": StoppingCriteriaList(criteria),
    }
    if sampling.allowed_token_ids:
        allowed = list(sampling.allowed_token_ids)
        kwargs["prefix_allowed_tokens_fn"] = lambda batch_id, ids: allowed
    if sampling.logprob_token_ids:
        kwargs.update(output_logits=True, return_dict_in_generate=True)
    # Every option is passed, 1.0 too: what is left out, generate takes from the model's generation_config.json
    # (Qwen2.5-Instruct's: repetition_penalty 1.05, top_k 20), where vLLM answers with ragroute's settings alone.
    kwargs["repetition_penalty"] = sampling.repetition_penalty
    if sampling.temperature > 0:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    return kwargs


def eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def answer_tokens(new_tokens: list[int], eos: set[int]) -> tuple[list[int], bool]:
    """The generated tokens up to and including the first EOS, and whether there was one."""
    for i, tok in enumerate(new_tokens):
        if tok in eos:
            return new_tokens[: i + 1], True
    return new_tokens, False


def answer_text(tokenizer: Any, tokens: list[int], stops: list[str]) -> tuple[str, bool]:
    """The answer text of ``tokens`` (special tokens dropped), cut at the first stop string."""
    return truncate_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stops)


def finish_reason(length: int, hit_eos: bool, hit_stop: bool, max_tokens: int) -> str:
    return "stop" if (hit_eos or hit_stop or length < max_tokens) else "length"


def token_logprobs(logits: Any, row: int, tokens: list[int], wanted: list[int],
                   into: list[dict[int, float]] | None = None) -> list[dict[int, float]]:
    """The log-probabilities of ``wanted`` (and of the generated token) at every step, from the raw logits
    (before the constraint and penalties, as vLLM's default ``raw_logprobs`` mode returns)."""
    import torch

    steps = into or [{} for _ in tokens]
    for step, token in enumerate(tokens):
        raw = torch.log_softmax(logits[step][row].float(), dim=-1)
        for tok in [*wanted, token]:
            steps[step][int(tok)] = raw[tok].item()
    return steps


def _top_logprobs(scores: Any, row: int, tokens: list[int], k: int) -> list[dict[int, float]]:
    import torch

    logprobs = []
    for step, token in enumerate(tokens):
        step_lp = torch.log_softmax(scores[step][row].float(), dim=-1)
        top = torch.topk(step_lp, k)
        entry = dict(zip(top.indices.tolist(), top.values.tolist(), strict=True))
        entry.setdefault(token, step_lp[token].item())  # the sampled token, as vLLM does
        logprobs.append(entry)
    return logprobs


class TransformersEngine(GenerationEngine):
    """The batch face."""

    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        self.model_name = model.name
        self.batch_size = engine.transformers.batch_size
        self.tokenizer, self.model, self.device = load_model(model, engine.transformers.device)

    def verdict_tokenizer(self) -> Any:
        return self.tokenizer

    def _generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        for start in range(0, len(requests), self.batch_size):
            results.extend(self._generate_batch(requests[start : start + self.batch_size], sampling))
        return results

    def _generate_batch(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        import torch

        batch = encode(self.tokenizer, [prompt_text(self.tokenizer, r) for r in requests], self.device)
        clock = _FirstTokenClock()
        kwargs = generate_kwargs(sampling, self.tokenizer, [clock])
        kwargs.update(output_scores=sampling.logprobs is not None, return_dict_in_generate=True)
        started = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**batch, **kwargs)
        finished = time.perf_counter()
        ttft = None if clock.first_token_at is None else clock.first_token_at - started
        prompt_len = batch["input_ids"].shape[1]
        eos = eos_ids(self.model)
        results = []
        for row, new_tokens in enumerate(out.sequences[:, prompt_len:].tolist()):
            tokens, hit_eos = answer_tokens(new_tokens, eos)
            text, hit_stop = answer_text(self.tokenizer, tokens, list(sampling.stop))
            logprobs = None
            if sampling.logprobs is not None:
                logprobs = _top_logprobs(out.scores, row, tokens, sampling.logprobs)
            if sampling.logprob_token_ids:
                logprobs = token_logprobs(out.logits, row, tokens, sampling.logprob_token_ids, logprobs)
            results.append(
                GenerationResult(
                    text=text,
                    prompt_tokens=int(batch["attention_mask"][row].sum().item()),
                    completion_tokens=len(tokens),
                    finish_reason=finish_reason(len(tokens), hit_eos, hit_stop, sampling.max_tokens),
                    total_s=finished - started,
                    ttft_s=ttft,
                    token_ids=tokens,
                    logprobs=logprobs,
                )
            )
        return results

    def close(self) -> None:
        self.model = None


class _TokenQueue:
    """A ``transformers`` streamer (``put``/``end``) that hands each step's new token ids from the worker thread
    to an ``asyncio.Queue`` on the event loop; the first ``put`` is the prompt and is skipped."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        self._prompt_seen = False
        self.steps = 0  # generated steps so far

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.steps += 1
        self.loop.call_soon_threadsafe(self.queue.put_nowait, [int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


class _StreamText:
    """The answer text as tokens arrive: everything is decoded again each step (so the joined pieces are exactly
    the batch face's text), cut at stop strings, and the last characters are held back while they could still
    begin a stop string or an unfinished multi-byte character."""

    def __init__(self, tokenizer: Any, eos: set[int], stops: list[str]) -> None:
        self.tokenizer, self.eos, self.stops = tokenizer, eos, stops
        self.hold = max((len(s) for s in stops), default=1)  # a stop string's start, or one character
        self.tokens: list[int] = []
        self.sent = 0
        self.hit_eos = self.hit_stop = False

    def add(self, ids: list[int]) -> str:
        """The new text that is safe to send after ``ids``."""
        if not self.hit_eos:
            self.tokens, self.hit_eos = answer_tokens(self.tokens + ids, self.eos)
        text, self.hit_stop = answer_text(self.tokenizer, self.tokens, self.stops)
        if self.hit_stop:
            return self._send(text, len(text))
        safe = len(text) - self.hold
        while safe > self.sent and text[safe - 1] == "\ufffd":
            safe -= 1
        return self._send(text, safe)

    def finish(self) -> str:
        text, self.hit_stop = answer_text(self.tokenizer, self.tokens, self.stops)
        return self._send(text, len(text))

    def _send(self, text: str, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece, self.sent = text[self.sent : upto], upto
        return piece


class StreamingTransformersEngine(StreamingEngine):
    """The streaming face: one worker thread runs ``generate()`` for one request at a time (requests wait their
    turn); its tokens stream back to the event loop."""

    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        self.spec, self.engine_cfg = model, engine
        self.model_name = model.name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hf-{model.name}")
        self.model: Any = None
        self.tokenizer: Any = None
        self._counter = TokenCounter()

    def _load(self) -> None:
        self.tokenizer, self.model, self.device = load_model(self.spec, self.engine_cfg.transformers.device)
        positions = getattr(self.model.config, "max_position_embeddings", None) or self.spec.max_model_len
        self.context_length = min(self.spec.max_model_len, positions)
        self._counter.load(self.spec.tokenizer or self.spec.path)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    async def check_health(self) -> None:
        if self.model is None:
            raise EngineError(f"{self.model_name}: model not loaded")

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return self._counter.count(messages)

    def verdict_tokenizer(self) -> Any:
        return self.tokenizer

    def _run(self, text: str, sampling: SamplingConfig, tokens: _TokenQueue,
             cancel: threading.Event) -> tuple[int, list[dict[int, float]] | None]:
        """Generate on the worker thread: (prompt tokens, the requested token log-probabilities)."""
        import torch

        if cancel.is_set():  # abandoned while it waited for the worker
            tokens.end()
            return 0, None
        try:
            batch = encode(self.tokenizer, [text], self.device)
            kwargs = generate_kwargs(sampling, self.tokenizer, [_Cancelled(cancel)])
            with torch.inference_mode():
                out = self.model.generate(**batch, **kwargs, streamer=tokens)
            if cancel.is_set():
                log.info("%s: generation cancelled after %d of %d tokens", self.model_name, tokens.steps,
                         sampling.max_tokens)
            prompt_len = int(batch["input_ids"].shape[1])
            logprobs = None
            if sampling.logprob_token_ids:
                new = answer_tokens(out.sequences[0, prompt_len:].tolist(), eos_ids(self.model))[0]
                logprobs = token_logprobs(out.logits, 0, new, sampling.logprob_token_ids)
            return prompt_len, logprobs
        except BaseException:
            tokens.end()  # unblock the reader; the future carries the error
            raise

    async def _stream(self, messages: list[Message], sampling: SamplingConfig) -> AsyncIterator[Chunk]:
        if self.model is None:
            raise EngineError(f"{self.model_name}: model not loaded")
        text = prompt_text(self.tokenizer, GenerationRequest(messages=messages))
        tokens, cancel = _TokenQueue(asyncio.get_running_loop()), threading.Event()
        answer = _StreamText(self.tokenizer, eos_ids(self.model), list(sampling.stop))
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._run, text, sampling, tokens, cancel
        )
        try:
            while (ids := await tokens.queue.get()) is not None:
                if piece := answer.add(ids):
                    yield Chunk(piece)
            try:
                prompt_tokens, logprobs = await future
            except Exception as exc:
                raise EngineError(f"{self.model_name}: generation failed: {type(exc).__name__}: {exc}") from exc
            finish = finish_reason(len(answer.tokens), answer.hit_eos, answer.hit_stop, sampling.max_tokens)
            yield Chunk(answer.finish(), finish_reason=finish, prompt_tokens=prompt_tokens,
                        completion_tokens=len(answer.tokens), logprobs=logprobs)
        finally:
            cancel.set()  # stops a running generation at its next token (the stopping criterion)
            future.cancel()  # drops one still waiting for the worker

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.model = None
