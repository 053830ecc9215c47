"""Local batched generation with ``transformers`` (the fallback when vLLM is not installed)."""

from __future__ import annotations

import time

from ragroute.engines.base import (
    EngineConfig,
    GenerationEngine,
    GenerationRequest,
    GenerationResult,
    SamplingConfig,
)
from ragroute.models import ModelSpec, load_causal_lm, load_tokenizer


class _FirstTokenClock:
    """A stopping criterion that never stops: it only notes when the first new token exists (TTFT)."""

    def __init__(self) -> None:
        self.first_token_at: float | None = None

    def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001 - transformers' StoppingCriteria signature
        import torch

        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def truncate_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; the stop string itself is not returned."""
    cut = min((i for i in (text.find(s) for s in stops) if i != -1), default=-1)
    return (text[:cut], True) if cut != -1 else (text, False)


class TransformersEngine(GenerationEngine):
    def __init__(self, model: ModelSpec, engine: EngineConfig) -> None:
        import torch

        self.model_name = model.name
        self.batch_size = engine.batch_size
        self.tokenizer = load_tokenizer(model.tokenizer or model.path)
        self.tokenizer.padding_side = "left"  # decoder-only batching: pad on the left so answers line up
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = engine.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model = load_causal_lm(model.path, dtype=model.dtype).to(device).eval()

    def _prompt_text(self, request: GenerationRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        return self.tokenizer.apply_chat_template(
            request.messages, tokenize=False, add_generation_prompt=not request.continues_answer,
            continue_final_message=request.continues_answer,
        )

    def generate(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        for start in range(0, len(requests), self.batch_size):
            results.extend(self._generate_batch(requests[start : start + self.batch_size], sampling))
        return results

    def _generate_batch(self, requests: list[GenerationRequest], sampling: SamplingConfig) -> list[GenerationResult]:
        import torch
        from transformers import StoppingCriteriaList

        texts = [self._prompt_text(r) for r in requests]
        # Chat templates already carry their special tokens; plain prompts get none added either, as vLLM does.
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        clock = _FirstTokenClock()
        gen_kwargs = {
            "max_new_tokens": sampling.max_tokens,
            "min_new_tokens": sampling.min_tokens,
            "do_sample": sampling.temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id,
            "stopping_criteria": StoppingCriteriaList([clock]),
            "output_scores": sampling.logprobs is not None,
            "output_logits": bool(sampling.logprob_token_ids),
            "return_dict_in_generate": True,
        }
        if sampling.allowed_token_ids:
            allowed = list(sampling.allowed_token_ids)
            gen_kwargs["prefix_allowed_tokens_fn"] = lambda batch_id, ids: allowed
        if sampling.repetition_penalty != 1.0:
            gen_kwargs["repetition_penalty"] = sampling.repetition_penalty
        if sampling.temperature > 0:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        if sampling.stop:
            gen_kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        started = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**batch, **gen_kwargs)
        finished = time.perf_counter()
        ttft = None if clock.first_token_at is None else clock.first_token_at - started
        prompt_len = batch["input_ids"].shape[1]
        eos_ids = self.model.generation_config.eos_token_id
        eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
        results = []
        for row, new_tokens in enumerate(out.sequences[:, prompt_len:].tolist()):
            length, hit_eos = len(new_tokens), False
            for i, tok in enumerate(new_tokens):
                if tok in eos_ids:
                    length, hit_eos = i + 1, True
                    break
            tokens = new_tokens[:length]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            text, hit_stop = truncate_at_stop(text, list(sampling.stop))
            logprobs = None
            if sampling.logprobs is not None:
                logprobs = []
                for step in range(length):
                    step_lp = torch.log_softmax(out.scores[step][row].float(), dim=-1)
                    top = torch.topk(step_lp, sampling.logprobs)
                    entry = dict(zip(top.indices.tolist(), top.values.tolist(), strict=True))
                    entry.setdefault(tokens[step], step_lp[tokens[step]].item())  # the sampled token, as vLLM does
                    logprobs.append(entry)
            if sampling.logprob_token_ids:
                # Raw logits (before the constraint and penalties), as vLLM's default raw_logprobs mode returns.
                logprobs = logprobs or [{} for _ in range(length)]
                for step in range(length):
                    raw = torch.log_softmax(out.logits[step][row].float(), dim=-1)
                    for tok in [*sampling.logprob_token_ids, tokens[step]]:
                        logprobs[step][int(tok)] = raw[tok].item()
            results.append(
                GenerationResult(
                    text=text,
                    prompt_tokens=int(batch["attention_mask"][row].sum().item()),
                    completion_tokens=length,
                    finish_reason="stop" if (hit_eos or hit_stop or length < sampling.max_tokens) else "length",
                    total_s=finished - started,
                    ttft_s=ttft,
                    token_ids=tokens,
                    logprobs=logprobs,
                )
            )
        return results

    def close(self) -> None:
        self.model = None
