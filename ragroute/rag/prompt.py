"""The prompt builder: the fixed instruction first, then numbered, truncated abstracts, then the question.

The instruction never changes between questions and comes first (as the system message), so an engine with
prefix caching (vLLM) computes its KV cache once and reuses it for every prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_PLACEHOLDER = re.compile(r"\{(context|question)\}")


def truncate(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters at a word boundary, with "..." appended when cut
    (so the result has at most ``max_chars + 3`` characters). ``max_chars=0`` keeps the whole text."""
    text = text.strip()
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space >= max_chars * 0.8:  # don't lose more than a fifth of the budget to find a word boundary
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "..."


def format_document(index: int, doc: Any, max_chars: int) -> str:
    """``[i] ID: title`` then the (truncated) abstract; documents without a title show just ``[i] ID``."""
    header = f"[{index}] {doc.id}: {doc.title}" if doc.title else f"[{index}] {doc.id}"
    return f"{header}\n{truncate(doc.text, max_chars)}"


def format_context(docs: Sequence[Any], max_chars: int) -> str:
    return "\n\n".join(format_document(i, doc, max_chars) for i, doc in enumerate(docs))


def build_messages(
    question: str,
    docs: Sequence[Any],
    instruction: str,
    template: str,
    max_chars: int,
    instruction_as_system: bool = True,
) -> list[dict[str, str]]:
    """Chat messages for one question; ``docs`` (anything with id, title, text) are cited as [0], [1], ..."""
    values = {
        "context": format_context(docs, max_chars) if docs else "(no documents found)",
        "question": question,
    }
    # One pass over the template, so braces inside a question or an abstract are never read as placeholders.
    user = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if instruction_as_system:
        return [{"role": "system", "content": instruction}, {"role": "user", "content": user}]
    return [{"role": "user", "content": f"{instruction}\n\n{user}"}]
