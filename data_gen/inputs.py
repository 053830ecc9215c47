"""Questions and corpus for a run: loading, validation and sharding."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragroute.errors import UserError
from ragroute.rag.corpus import Document, QAItem, load_corpus, load_questions
from ragroute.rag.pipeline import open_corpus
from ragroute.rag.retrieve import as_corpus
from ragroute.rag.store import CorpusReader


@dataclass
class RunInputs:
    questions: list[QAItem]
    corpus: list[Document] | CorpusReader  # a list for files, the memory-mapped store for a store directory
    problems: list[str] = field(default_factory=list)


def load_inputs(questions_path: str | None, corpus_path: str | None) -> RunInputs:
    """Load and check the questions and the corpus; bad questions are reported in ``problems`` and skipped."""
    if not questions_path:
        raise UserError("no questions file given (--questions FILE, or 'demo' for the bundled demo questions)")
    question_set = load_questions(questions_path)
    if corpus_path is None:
        try:
            corpus = load_corpus(questions_path)
        except UserError as exc:
            raise UserError(f"no --corpus given and the questions file is not a corpus itself: {exc}") from None
    else:
        corpus = open_corpus(corpus_path)
    if not len(corpus):
        raise UserError(f"the corpus {corpus_path or questions_path} holds no documents")
    reader = as_corpus(corpus)  # ids are looked up through the store's on-disk index, never collected in a set
    problems = list(question_set.problems)
    questions = []
    for item in question_set.items:
        if item.gold_doc_id is not None and reader.position_of(item.gold_doc_id) is None:
            problems.append(f"question {item.id}: unknown doc id {item.gold_doc_id}")
            continue
        questions.append(item)
    return RunInputs(questions=questions, corpus=corpus, problems=problems)


def select_shard(items: list[QAItem], index: int, count: int, limit: int | None) -> list[QAItem]:
    """Round-robin sharding keeps shards balanced when question difficulty drifts along the file."""
    mine = items[index::count]
    return mine[:limit] if limit is not None else mine
