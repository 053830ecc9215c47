"""The prompt builder: truncation with "...", [i] numbering, instruction first."""

from __future__ import annotations

from ragroute.rag.config import DEFAULT_INSTRUCTION, DEFAULT_TEMPLATE
from ragroute.rag.corpus import Document
from ragroute.rag.prompt import build_messages, format_context, truncate

ABSTRACT = (
    "Background: Elevated low-density lipoprotein cholesterol is a causal risk factor for atherosclerotic "
    "disease. Methods: We pooled individual data from randomized trials comparing statin therapy with placebo."
)


def test_truncate_cuts_at_a_word_with_ellipsis():
    cut = truncate(ABSTRACT, 80)
    assert cut.endswith("...")
    assert len(cut) <= 80 + 3
    body = cut[:-3]
    assert ABSTRACT.startswith(body)
    assert ABSTRACT[len(body)] in " ,."  # ended on a word boundary, not mid-word


def test_truncate_keeps_short_texts_and_zero_means_whole():
    assert truncate("Short abstract.", 800) == "Short abstract."
    assert truncate(ABSTRACT, 0) == ABSTRACT
    assert truncate(ABSTRACT, len(ABSTRACT)) == ABSTRACT
    unbroken = "x" * 100
    assert truncate(unbroken, 10) == "x" * 10 + "..."  # no space to cut at: a hard cut


def test_context_numbers_documents_with_id_and_title():
    docs = [
        Document("PMID1", "Statins and LDL", ABSTRACT),
        Document("12345", "", "An abstract without title."),
    ]
    context = format_context(docs, max_chars=50)
    blocks = context.split("\n\n")
    assert blocks[0].startswith("[0] PMID1: Statins and LDL\n")
    assert blocks[0].endswith("...")
    assert blocks[1] == "[1] 12345\nAn abstract without title."


def test_instruction_comes_first_as_system_message():
    docs = [Document("D1", "T", ABSTRACT)]
    messages = build_messages("Do statins work?", docs, DEFAULT_INSTRUCTION, DEFAULT_TEMPLATE, 800)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == DEFAULT_INSTRUCTION
    assert "Cite sources with [0], [1]" in messages[0]["content"]
    assert "Yes., No. or Maybe." in messages[0]["content"]
    user = messages[1]["content"]
    assert user.startswith("Context:\n[0] D1: T\n")
    assert user.endswith("Question: Do statins work?\n\nAnswer:")

    # Two questions share the whole system message: the prefix an engine's prefix cache reuses.
    other = build_messages("Other?", [Document("D9", "", "x")], DEFAULT_INSTRUCTION, DEFAULT_TEMPLATE, 800)
    assert other[0] == messages[0]


def test_instruction_can_lead_the_user_message():
    messages = build_messages("Q?", [], "Be brief.", DEFAULT_TEMPLATE, 800, instruction_as_system=False)
    assert len(messages) == 1 and messages[0]["role"] == "user"
    assert messages[0]["content"].startswith("Be brief.\n\nContext:\n(no documents found)")


def test_braces_in_questions_and_abstracts_are_literal():
    docs = [Document("D1", "", "Values {question} and {context} appear in text.")]
    messages = build_messages("Is {x} > {context}?", docs, "I", "Q: {question}\nC: {context}", 800)
    assert (
        messages[1]["content"]
        == "Q: Is {x} > {context}?\nC: [0] D1\nValues {question} and {context} appear in text."
    )
