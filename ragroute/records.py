"""The dataset record schema and a crash-safe JSONL writer/reader.

data_gen writes one :class:`AnswerRecord` per question and model; train, router and evaluation read them.
Records are appended one line at a time, flushed and fsynced, so a run killed at any point keeps every record
it finished, and a rerun skips the ids already written. A torn last line (the process died mid-write) is
ignored by the reader and cut off by the writer before it appends.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class AnswerRecord:
    """One question answered by one model through the RAG pipeline."""

    id: str
    question: str
    answer: str
    model: str  # ModelSpec.name
    prompt: str = ""  # the full prompt text sent to the model (after the chat template where applied)
    messages: list[dict[str, str]] = field(default_factory=list)  # the chat messages, when chat was used
    doc_ids: list[str] = field(default_factory=list)  # documents in the prompt, in citation order [0], [1], ...
    doc_scores: list[float] = field(default_factory=list)
    doc_titles: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: retrieval, rerank, ..., generation
    config_hash: str = ""
    # Gold fields where the dataset has them (PubMedQA: LONG_ANSWER and final_decision).
    gold_answer: str | None = None
    gold_decision: str | None = None
    gold_doc_id: str | None = None
    # Top-k logprobs of every answer token, for offline logit distillation: [[token_id, logprob] x k] per step.
    answer_token_ids: list[int] | None = None
    top_logprobs: list[list[list[float]]] | None = None
    # Answered by a shape-only model (random weights, fixed answer length): timings are real, the answer is not.
    shape_only: bool = False
    # Verdict-first answers (ragroute.verdict): the verdict the answer opens with and P(yes/no/maybe) of the model.
    verdict: str | None = None
    verdict_probs: dict[str, float] | None = None
    # The answer with a citation on every sentence (data_gen attribute_citations): the model's own [i] markers when
    # it wrote them (citation_source "model"), else each sentence attributed after generation to its best-supporting
    # passage by ragroute.attribution ("attributed"). ``answer`` stays the model's text, so citation metrics count
    # only the model's own markers.
    cited_answer: str | None = None
    citation_source: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _truncate_torn_tail(path: Path) -> None:
    """Cut a last line that lacks its newline (a write interrupted by a crash)."""
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # Walk back to the previous newline.
        pos = size - 1
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            idx = data.rfind(b"\n")
            if idx != -1:
                fh.truncate(start + idx + 1)
                return
            pos = start
        fh.truncate(0)


class JsonlWriter:
    """Append records to a JSONL file durably: each line is flushed and fsynced before ``write`` returns."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _truncate_torn_tail(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def write(self, record: AnswerRecord | dict[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: list[AnswerRecord | dict[str, Any]]) -> None:
        """Append several records with one flush and one fsync: durable together when this returns (a crash
        before then may keep some of them; a torn last line is dropped on the next open). One fsync per record
        cost data_gen ~6 ms a question on a GPU machine's disk, as much as its whole RAG pipeline."""
        if not records:
            return
        lines = [r.to_json() if isinstance(r, AnswerRecord) else json.dumps(r, ensure_ascii=False) for r in records]
        self._fh.write("\n".join(lines) + "\n")
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON object line; a torn final line (no newline, bad JSON) is skipped."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    return
                return
            if line.strip():
                yield json.loads(line)


def read_records(path: str | os.PathLike[str]) -> list[AnswerRecord]:
    """All records of a data_gen output file (or of ``DIR/records.jsonl`` when given a directory)."""
    p = Path(path)
    if p.is_dir():
        p = p / "records.jsonl"
    return [AnswerRecord.from_dict(d) for d in iter_jsonl(p)]


def finished_ids(path: str | os.PathLike[str]) -> set[str]:
    """Ids already written to ``path`` (empty if the file does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return set()
    return {str(d["id"]) for d in iter_jsonl(p) if "id" in d}


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> Path:
    """A whole JSONL file at once, atomically (a partial file would silently be a shorter dataset); appending,
    resumable output uses :class:`JsonlWriter`. ASCII escapes: no raw U+2028 for a ``splitlines()`` reader to cut."""
    from ragroute.artifacts.io import write_atomic

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")

    return write_atomic(path, write)
