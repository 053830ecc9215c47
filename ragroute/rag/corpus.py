"""Corpora and question sets: PubMedQA ``ori_pqal`` JSON, JSONL, or a ``datasets`` directory / hub name.

PubMedQA has no titles. Its QUESTION is usually the paper's own title, so using it as the document title would
leak the answer into retrieval (every question would match its abstract word for word); documents loaded from
PubMedQA therefore get an empty title, the abstract is the CONTEXTS joined with spaces and the id is the PMID.

Question sets never crash on bad input: a malformed line or item is reported in ``QuestionSet.problems`` (as
"line 7: empty question") and skipped, so one bad record does not cost a long data-generation run.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.errors import UserError

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"
DEMO_CORPUS = DEMO_DIR / "corpus.jsonl"
DEMO_QUESTIONS = DEMO_DIR / "questions.jsonl"

DECISIONS = ("yes", "no", "maybe")


@dataclass
class Document:
    id: str
    title: str
    text: str


@dataclass
class QAItem:
    id: str
    question: str
    gold_answer: str | None = None
    gold_decision: str | None = None
    gold_doc_id: str | None = None


@dataclass
class QuestionSet:
    items: list[QAItem]
    problems: list[str] = field(default_factory=list)  # human-readable reports of skipped input


# ------------------------------------------------------------------------------------------------ raw reading


def _is_pubmedqa(data: Any) -> bool:
    return isinstance(data, dict) and any(isinstance(v, dict) and "QUESTION" in v for v in data.values())


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, object or None, problem or None) for every non-blank line (of a gzip file too: ``.gz``)."""
    opened = gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.suffix == ".gz" else path.open(
        encoding="utf-8", errors="replace")
    with opened as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield lineno, None, f"line {lineno}: malformed JSON"
                continue
            if not isinstance(obj, dict):
                yield lineno, None, f"line {lineno}: not a JSON object"
                continue
            yield lineno, obj, None


def _existing_file(path: str, what: str) -> Path | None:
    """The path as a file, None when it is a directory (a ``datasets`` dataset); UserError when missing."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        return None
    if path.count("/") == 1 and not p.suffix and not p.is_absolute() and not path.startswith("."):
        return None  # looks like a hub name (org/dataset): let `datasets` try
    raise UserError(f"{what} file not found: {path}")


def _datasets_rows(path: str, what: str) -> list[dict[str, Any]]:
    """Rows of a ``datasets`` directory (save_to_disk or data files) or hub dataset, first split."""
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"{what} '{path}' is a directory or hub name; reading it needs `pip install datasets`"
        ) from None
    try:
        p = Path(path).expanduser()
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(p))
        else:
            loaded = datasets.load_dataset(path)
    except (
        Exception
    ) as exc:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ConnectionError)
        raise UserError(
            f"could not load {what} '{path}' with datasets: {type(exc).__name__}: {exc}"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[next(iter(loaded))]
    return [dict(row) for row in loaded]


def _read_rows(path: str, what: str) -> tuple[Any, str]:
    """The file's content as (dict, "pubmedqa"), (path, "jsonl") or (list of dicts, "rows")."""
    file = _existing_file(path, what)
    if file is None:
        return _datasets_rows(path, what), "rows"
    try:
        with file.open("rb") as fh:
            head = fh.read(4096).lstrip()
    except OSError as exc:
        raise UserError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if file.suffix == ".jsonl" or not head.startswith((b"{", b"[")):
        return file, "jsonl"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return file, "jsonl"  # one object per line (a .json name, JSONL content)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} file {path}: {exc}") from None
    if _is_pubmedqa(data):
        return data, "pubmedqa"
    if isinstance(data, list):
        return [row if isinstance(row, dict) else {} for row in data], "rows"
    if isinstance(data, dict):
        return file, "jsonl"  # a single-line JSONL file
    raise UserError(
        f"{path}: JSON is neither PubMedQA (PMID -> {{QUESTION, CONTEXTS, ...}}) nor a list of rows"
    )


# --------------------------------------------------------------------------------------------------- corpus


def _document_from_row(row: dict[str, Any]) -> Document | str:
    doc_id = row.get("id", row.get("doc_id", row.get("pmid", row.get("PMID"))))
    text = row.get("text", row.get("abstract", row.get("contents")))
    if isinstance(text, list):
        text = " ".join(str(t) for t in text)
    if doc_id is None or str(doc_id).strip() == "":
        return "missing id"
    if not isinstance(text, str) or not text.strip():
        return "empty text"
    return Document(id=str(doc_id), title=str(row.get("title") or ""), text=text.strip())


def load_corpus(path: str) -> list[Document]:
    """Documents of a PubMedQA json, a JSONL of ``{id, title, text}``, a ``datasets`` directory/hub name, or
    ``demo`` for the bundled demo corpus.

    Rows without an id or text are skipped; a corpus with no usable document, a missing or unreadable file, or
    two documents with the same id is a :class:`UserError` (ids are what citations point at).
    """
    data, kind = _read_rows(str(DEMO_CORPUS) if str(path) == "demo" else str(path), "corpus")
    docs: list[Document] = []
    skipped: list[str] = []
    if kind == "pubmedqa":
        for pmid, item in data.items():
            contexts = item.get("CONTEXTS") if isinstance(item, dict) else None
            if not contexts:
                skipped.append(f"{pmid}: no CONTEXTS")
                continue
            docs.append(Document(id=str(pmid), title="", text=" ".join(str(c) for c in contexts)))
    else:
        rows: Any = (
            _iter_jsonl(data) if kind == "jsonl" else ((i, r, None) for i, r in enumerate(data, start=1))
        )
        for lineno, row, problem in rows:
            result = problem if row is None else _document_from_row(row)
            if isinstance(result, Document):
                docs.append(result)
            else:
                skipped.append(result if row is None else f"line {lineno}: {result}")
    if not docs:
        detail = f" ({'; '.join(skipped[:3])})" if skipped else ""
        raise UserError(f"corpus {path} has no usable documents{detail}")
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise UserError(f"corpus {path}: document id '{doc.id}' appears more than once")
        seen.add(doc.id)
    return docs


# ------------------------------------------------------------------------------------------------ questions


def _normalize_decision(value: Any) -> str | None:
    if value is None:
        return None
    decision = str(value).strip().lower()
    return decision if decision in DECISIONS else None


def _qa_from_row(row: dict[str, Any], fallback_id: str) -> QAItem | str:
    question = row.get("question", row.get("QUESTION"))
    if not isinstance(question, str) or not question.strip():
        return "empty question"
    if "gold_answer" in row or "gold_decision" in row:
        # A data_gen record: its gold fields are the reference; its "answer" is a model's, never gold.
        decision_raw, answer = row.get("gold_decision"), row.get("gold_answer")
    else:
        decision_raw = row.get("final_decision", row.get("decision"))
        answer = row.get("long_answer", row.get("answer", row.get("LONG_ANSWER")))
    decision = _normalize_decision(decision_raw)
    if decision_raw not in (None, "") and decision is None:
        return f"final_decision must be yes, no or maybe, not {decision_raw!r}"
    doc_id = row.get("doc_id", row.get("gold_doc_id"))
    qid = row.get("id", fallback_id)
    return QAItem(
        id=str(qid),
        question=question.strip(),
        gold_answer=str(answer) if answer not in (None, "") else None,
        gold_decision=decision,
        gold_doc_id=str(doc_id) if doc_id not in (None, "") else None,
    )


def load_questions(path: str) -> QuestionSet:
    """Questions of a PubMedQA json (gold answer = LONG_ANSWER, decision = final_decision, doc = PMID), a JSONL
    of ``{id, question, long_answer|answer, final_decision, doc_id}``, data_gen records (their ``gold_*``
    fields, not the model's answer), or ``demo`` for the bundled questions.

    Bad items (malformed JSON, empty question, unknown decision, duplicate id) are listed in ``problems`` and
    skipped. Only a missing/unreadable file or a file of the wrong shape is a :class:`UserError`.
    """
    data, kind = _read_rows(str(DEMO_QUESTIONS) if str(path) == "demo" else str(path), "questions")
    items: list[QAItem] = []
    problems: list[str] = []
    if kind == "pubmedqa":
        for pmid, item in data.items():
            if not isinstance(item, dict):
                problems.append(f"{pmid}: not an object")
                continue
            row = {
                "id": pmid,
                "question": item.get("QUESTION"),
                "long_answer": item.get("LONG_ANSWER"),
                "final_decision": item.get("final_decision"),
                "doc_id": pmid,
            }
            result = _qa_from_row(row, str(pmid))
            if isinstance(result, QAItem):
                items.append(result)
            else:
                problems.append(f"{pmid}: {result}")
    else:
        rows: Any = (
            _iter_jsonl(data) if kind == "jsonl" else ((i, r, None) for i, r in enumerate(data, start=1))
        )
        for lineno, row, problem in rows:
            if row is None:
                problems.append(problem or f"line {lineno}: unreadable")
                continue
            result = _qa_from_row(row, f"line-{lineno}")
            if isinstance(result, QAItem):
                items.append(result)
            else:
                problems.append(f"line {lineno}: {result}")
    unique: list[QAItem] = []
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            problems.append(f"id {item.id}: duplicate question id (kept the first)")
            continue
        seen.add(item.id)
        unique.append(item)
    return QuestionSet(items=unique, problems=problems)
