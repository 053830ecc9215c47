"""Citations on every answer: the model's own markers are kept, missing ones attributed per sentence."""

import re

from ragroute.attribution import ATTRIBUTED, MODEL, attribute
from ragroute.quality import parse_citations

PASSAGES = [
    "Aspirin reduces inflammation and fever in adults with arthritis.",
    "Smoking causes lung cancer and chronic obstructive pulmonary disease.",
    "Statins lower LDL cholesterol and cardiovascular events.",
]


def test_own_citations_are_kept_verbatim():
    answer = "No. Smoking causes cancer [1]."
    assert attribute(answer, PASSAGES) == (answer, MODEL)


def test_each_sentence_gets_its_best_supporting_passage():
    text, source = attribute("Yes. Statins lower cholesterol. Smoking harms the lungs and causes cancer", PASSAGES)
    assert source == ATTRIBUTED
    assert text == "Yes. Statins lower cholesterol [2]. Smoking harms the lungs and causes cancer [1]"
    assert parse_citations(text) == [2, 1]


def test_no_text_is_lost_around_quotes_and_closing_punctuation():
    answer = 'Yes. In this scenario, the answer is "yes." The study (n = 40) lowered LDL (p < 0.05). Statins help!'
    text, source = attribute(answer, PASSAGES)
    assert source == ATTRIBUTED and re.sub(r" \[\d\]", "", text) == answer
    assert parse_citations(text) and text.endswith("help [2]!")


def test_out_of_range_markers_do_not_count_as_own_citations():
    text, source = attribute("Maybe. It depends [7].", PASSAGES)
    assert source == ATTRIBUTED and 0 <= parse_citations(text)[-1] < len(PASSAGES)


def test_a_bare_verdict_rests_on_the_top_passage_and_no_passages_means_no_citation():
    assert attribute("Maybe.", PASSAGES) == ("Maybe. [0]", ATTRIBUTED)
    assert attribute("Yes. Fine.", []) == ("Yes. Fine.", None)
