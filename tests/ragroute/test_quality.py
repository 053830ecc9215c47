"""Answer-quality metrics on hand-checked cases."""

from __future__ import annotations

import pytest

from ragroute.quality import (
    citation_overlap,
    citation_validity,
    extract_decision,
    own_doc_cited,
    parse_citations,
    rouge_l,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes. Statins lower LDL cholesterol [0].", "yes"),
        ("yes, the trial supports it", "yes"),
        ("No, vitamin D did not change bone density [1].", "no"),
        ("No.", "no"),
        ("No", "no"),
        ("No it does not reduce mortality.", "no"),
        ("Maybe - the evidence is mixed.", "maybe"),
        ("**Yes** — the intervention worked.", "yes"),
        ("Answer: no", "no"),
        ("Final answer: Maybe", "maybe"),
        ("Based on the provided context, yes, the drug is effective.", "yes"),
        ("According to [0], no.", "no"),
        ("In conclusion, maybe.", "maybe"),
        ("The study found a benefit. Therefore the answer is no.", "no"),
        ("The answer to this question is yes: rates rose [2].", "yes"),
        ("The answer is: No.", "no"),
        ("Based on the provided information, the answer is: **Yes**", "yes"),
        ("The answer to this question is:", None),
        ("It is unclear whether the effect persists.", "maybe"),
        ("The evidence is inconclusive.", "maybe"),
        ("Yes and no: it depends on the dose.", "maybe"),
        # Not verdicts: a determiner "no", "there is no evidence", words that merely start like a verdict.
        ("No significant difference was found between groups.", None),
        ("There is no evidence that the drug works.", None),
        ("Nothing in the context addresses this.", None),
        ("Yesterday's trial enrolled 40 patients.", None),
        ("Based on the context, no significant difference was seen.", None),
        ("The answer is not clear from the context.", None),
        ("Metformin is the first-line drug [0].", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_decision(text: str | None, expected: str | None) -> None:
    assert extract_decision(text) == expected


def test_token_f1_by_hand() -> None:
    # pred tokens: cats sat mat (articles dropped); ref: cat sat on mat -> overlap {sat, mat} = 2
    # precision 2/3, recall 2/4, F1 = 2*(2/3)*(1/2)/((2/3)+(1/2)) = 4/7
    assert token_f1("The cats sat, the mat!", "a cat sat on the mat") == pytest.approx(4 / 7)
    assert token_f1("Yes.", "yes") == 1.0
    assert token_f1("", "") == 1.0
    assert token_f1("something", "") == 0.0
    assert token_f1("alpha", "beta") == 0.0


def test_rouge_l_by_hand() -> None:
    # LCS of "a b c d" and "a c d e" is "a c d" (3): P = 3/4, R = 3/4, F = 0.75
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("statins lower cholesterol", "statins lower cholesterol") == pytest.approx(1.0)
    # Stemming: "lowers"/"lowered" share the stem "lower".
    assert rouge_l("statin lowers LDL", "statin lowered LDL") == pytest.approx(1.0)
    assert rouge_l("", "reference") == 0.0
    assert rouge_l("x y", "z w") == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Statins help [0].", [0]),
        ("See [1, 2] and [3][4].", [1, 2, 3, 4]),
        ("Repeated [2] then [0] and [2] again.", [2, 0]),
        ("A range [1-3]; semicolons [5; 6].", [1, 2, 3, 5, 6]),
        ("Not citations: [a], [], [1.5], (2).", []),
        ("No citations at all.", []),
    ],
)
def test_parse_citations(text: str, expected: list[int]) -> None:
    assert parse_citations(text) == expected


def test_citation_validity() -> None:
    result = citation_validity("Claims [0], [1] and [7].", n_docs=3)
    assert result.valid_fraction == pytest.approx(2 / 3)
    assert result.has_citation and result.n_cited == 3
    assert citation_validity("Uncited claim.", n_docs=3) == (0.0, False, 0)
    assert citation_validity("[0][1][2]", n_docs=3).valid_fraction == 1.0


def test_own_doc_cited() -> None:
    doc_ids = ["DEMO-007", "DEMO-001", "DEMO-042"]
    assert own_doc_cited("As shown in [1].", doc_ids, "DEMO-001")
    assert not own_doc_cited("As shown in [0][2].", doc_ids, "DEMO-001")
    assert not own_doc_cited("Index out of range [5].", doc_ids, "DEMO-001")
    assert not own_doc_cited("As shown in [1].", doc_ids, None)


def test_citation_overlap() -> None:
    assert citation_overlap("[0][1]", "[1][2]") == pytest.approx(1 / 3)
    assert citation_overlap("none", "none either") == 1.0
    assert citation_overlap("[0]", "uncited") == 0.0
