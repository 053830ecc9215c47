"""Bounds on the work one request may cause, checked before any model work starts.

Character limits alone do not bound a model's work: 3,500 emoji are 10,506 SmolLM2 tokens, five times its
context. So the prompt is counted in the answering model's own tokens (its chat template applied: the engines'
``count_prompt_tokens``) and checked
against its context, and ``max_tokens`` against what the prompt leaves. Stop strings are bounded in number and
length (transformers compiles each one before generating: ~0.1 s apiece). Every violation is a
:class:`~serve.api_error.APIError` (400) naming the field and the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from serve.api_error import APIError
from serve.config import LimitsConfig


def rejected(message: str, param: str | None, code: str) -> APIError:
    """The 400 for a request beyond a limit, naming the field (``param``) and the limit."""
    return APIError(400, message, param=param, code=code)


def check_stop(stop: Sequence[str], limits: LimitsConfig) -> list[str]:
    """The stop strings, if there are at most ``max_stop`` of them, none empty or longer than ``max_stop_chars``."""
    if len(stop) > limits.max_stop:
        raise rejected(f"'stop' has {len(stop)} strings; the limit is {limits.max_stop}", "stop",
                              "too_many_stop_strings")
    for i, text in enumerate(stop):
        if not text:
            raise rejected(f"'stop[{i}]' is empty", "stop", "empty_stop_string")
        if len(text) > limits.max_stop_chars:
            raise rejected(f"'stop[{i}]' is {len(text)} characters; the limit is {limits.max_stop_chars}",
                                  "stop", "stop_string_too_long")
    return list(stop)


def check_messages(contents: Sequence[str], limits: LimitsConfig) -> None:
    """At most ``max_messages`` chat messages holding at most ``max_prompt_chars`` characters together."""
    if len(contents) > limits.max_messages:
        raise rejected(f"'messages' has {len(contents)} messages; the limit is {limits.max_messages}",
                              "messages", "too_many_messages")
    total = sum(len(text) for text in contents)
    if total > limits.max_prompt_chars:
        raise rejected(f"'messages' hold {total} characters; the limit is {limits.max_prompt_chars}",
                              "messages", "prompt_too_long")


def check_max_tokens(max_tokens: int | None, default: int, limits: LimitsConfig, param: str = "max_tokens",
                     min_tokens: int | None = None) -> int:
    """The requested answer length (``default`` when None), at most ``max_tokens_limit`` and at least
    ``min_tokens``."""
    if max_tokens is None:
        max_tokens = default
    elif max_tokens > limits.max_tokens_limit:
        raise rejected(f"'{param}' is {max_tokens}; the limit is {limits.max_tokens_limit}", param,
                              "max_tokens_too_large")
    if min_tokens is not None and min_tokens > max_tokens:
        raise rejected(f"'min_tokens' is {min_tokens}, above the answer length {max_tokens}", "min_tokens",
                              "min_tokens_too_large")
    return max_tokens


def fit_to_context(prompt_tokens: int, max_tokens: int, context: int, model: str, explicit: bool,
                   param: str = "max_tokens") -> int:
    """``max_tokens`` if the prompt plus the answer fit ``context`` tokens; an unrequested default shrinks to
    what the prompt leaves. Raises a 400 :class:`~serve.api_error.APIError` when the prompt alone fills the context, or when an
    explicit ``max_tokens`` exceeds what is left."""
    left = context - prompt_tokens
    if left < 1:
        raise rejected(
            f"the prompt is {prompt_tokens} tokens; {model}'s context is {context} tokens (prompt + answer)",
            "messages", "context_length_exceeded")
    if max_tokens <= left:
        return max_tokens
    if not explicit:
        return left
    raise rejected(
        f"'{param}' is {max_tokens}, but the {prompt_tokens}-token prompt leaves {left} of {model}'s "
        f"{context}-token context", param, "context_length_exceeded")
