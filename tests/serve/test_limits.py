"""Request bounds: stop strings, messages, max_tokens, and prompts counted in the model's own tokens."""

from __future__ import annotations

import pytest

from ragroute.engines.base import count_chat_tokens
from serve.api_error import APIError
from serve.config import LimitsConfig
from serve.limits import (
    check_max_tokens,
    check_messages,
    check_stop,
    fit_to_context,
)

LIMITS = LimitsConfig(max_messages=3, max_prompt_chars=100, max_stop=4, max_stop_chars=10, max_tokens_limit=64)


def rejected(call, *args) -> APIError:
    with pytest.raises(APIError) as info:
        call(*args)
    assert info.value.status == 400  # the one client-error type, answered as a 400
    return info.value


def test_stop_strings_are_bounded_in_number_and_length():
    assert check_stop(["\n\n", "END"], LIMITS) == ["\n\n", "END"]
    many = rejected(check_stop, [str(i) for i in range(10_000)], LIMITS)
    assert (many.param, many.message) == ("stop", "'stop' has 10000 strings; the limit is 4")
    long = rejected(check_stop, ["ok", "x" * 11], LIMITS)
    assert long.message == "'stop[1]' is 11 characters; the limit is 10"
    assert rejected(check_stop, [""], LIMITS).code == "empty_stop_string"


def test_messages_are_bounded_in_number_and_characters():
    check_messages(["a" * 50, "b" * 50], LIMITS)
    assert rejected(check_messages, ["a"] * 4, LIMITS).message == "'messages' has 4 messages; the limit is 3"
    assert "the limit is 100" in rejected(check_messages, ["a" * 60, "b" * 41], LIMITS).message


def test_max_tokens_default_and_limit():
    assert check_max_tokens(None, 16, LIMITS) == 16
    assert check_max_tokens(64, 16, LIMITS) == 64
    assert rejected(check_max_tokens, 65, 16, LIMITS).message == "'max_tokens' is 65; the limit is 64"
    assert rejected(check_max_tokens, None, 16, LIMITS, "max_tokens", 20).param == "min_tokens"


def test_prompt_and_answer_must_fit_the_context():
    assert fit_to_context(100, 50, 2048, "m", explicit=True) == 50
    assert fit_to_context(2000, 256, 2048, "m", explicit=False) == 48  # the default shrinks to what is left
    over = rejected(fit_to_context, 2000, 256, 2048, "m", True)
    assert over.param == "max_tokens" and "leaves 48 of m's 2048-token context" in over.message
    full = rejected(fit_to_context, 10_506, 16, 2048, "m", False)
    assert full.code == "context_length_exceeded" and "10506 tokens" in full.message


def test_emoji_prompt_is_counted_in_tokens_not_characters(teacher_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    messages = [{"role": "system", "content": "\N{GRINNING FACE}" * 3500}, {"role": "user", "content": "Hi?"}]
    tokens = count_chat_tokens(tokenizer, messages)
    assert tokens > 3 * 3500  # 3,503 characters, over 10,000 tokens: far beyond a 2,048-token context
    assert count_chat_tokens(tokenizer, [{"role": "user", "content": "Hi?"}]) < 50
