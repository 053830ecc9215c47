"""The dataset record schema and a crash-safe JSONL writer/reader.

data_gen writes one :class:`AnswerRecord` per question and model; train, router and evaluation read them.
Records are appended one line at a time, flushed and fsynced, so a run killed at any point keeps every record
it finished, and a rerun skips the ids already written. A torn last line (the process died mid-write, even
inside a multi-byte character) is skipped by the reader and cut off, byte-safely and logged, by the writer
before it appends; a corrupt line in the middle stops the reader with a message naming the file and line.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.errors import UserError

log = logging.getLogger("ragroute.records")

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


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """One JSONL line as an object, None when it is not valid UTF-8 JSON (torn or corrupt)."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _last_line_start(fh: Any, end: int) -> int:
    """Offset of the first byte after the last newline before ``end`` (0 when there is none)."""
    pos, chunk = end, 65536
    while pos > 0:
        start = max(0, pos - chunk)
        fh.seek(start)
        idx = fh.read(pos - start).rfind(b"\n")
        if idx != -1:
            return start + idx + 1
        pos = start
    return 0


def repair_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut what a crash mid-write left at the end of a JSONL file: a last line without its newline, or last
    lines that are not valid UTF-8 JSON (a write torn inside a multi-byte character, half a line followed by a
    newline). Works on bytes, so a torn character cannot fail the repair. Returns the bytes removed (logged)."""
    p = Path(path)
    removed = 0
    with p.open("rb+") as fh:
        end = fh.seek(0, os.SEEK_END)
        while end > 0:
            fh.seek(end - 1)
            complete = fh.read(1) == b"\n"
            start = _last_line_start(fh, end - 1 if complete else end)
            fh.seek(start)
            raw = fh.read(end - start)
            if complete and (not raw.strip() or _parse_line(raw) is not None):
                break
            end = start
        removed = fh.seek(0, os.SEEK_END) - end
        if removed:
            fh.truncate(end)
    if removed:
        log.warning("%s: cut a torn tail of %d bytes (a write interrupted by a crash); %d bytes of complete "
                    "lines kept", p, removed, end)
    return removed


class JsonlWriter:
    """Append records to a JSONL file durably: each line is flushed and fsynced before ``write`` returns."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            repair_torn_tail(self.path)
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
    """Yield each JSON object line. A bad last line (torn by a crash: no newline, half a line, half a UTF-8
    character) is skipped; a bad line with complete lines after it is corruption, not a crash, and raises a
    :class:`UserError` naming the file and line."""
    p = Path(path)
    pending: tuple[int, bytes] | None = None  # a bad line: fatal only if another line follows it
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if pending is not None:
                raise UserError(_corrupt_line(p, *pending))
            obj = _parse_line(raw)
            if obj is None:
                pending = (lineno, raw)
                continue
            yield obj
    if pending is not None:
        log.info("%s: skipped a torn last line (%d bytes at line %d)", p, len(pending[1]), pending[0])


def _corrupt_line(path: Path, lineno: int, raw: bytes) -> str:
    try:
        json.loads(raw.decode("utf-8"))
        problem = "is JSON but not an object"
    except UnicodeDecodeError as exc:
        problem = f"is not valid UTF-8 (byte {exc.start})"
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON ({exc.msg} at column {exc.colno})"
    return (f"{path}: line {lineno} {problem}, and complete lines follow it, so it is not a torn tail from a crash. "
            f"Delete that line (sed -i '{lineno}d' {path}) to keep the rest and let a resumed run redo it, or "
            f"start the output over (--overwrite)")


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


def scan_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """The lenient reader of input files (questions, corpora): (line number, object or None, problem or None) for
    every non-blank line, reporting a bad line and going on instead of stopping. A line that is not valid UTF-8
    is decoded with U+FFFD for the bad bytes and comes with a problem naming it (the caller decides whether the
    replaced text is usable: an id is not). A ``.gz`` file is read through gzip."""
    path = Path(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line, problem = raw.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                line = raw.decode("utf-8", errors="replace")
                problem = f"line {lineno}: invalid UTF-8 (byte {exc.start}) replaced with U+FFFD"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield lineno, None, f"line {lineno}: malformed JSON"
                continue
            if not isinstance(obj, dict):
                yield lineno, None, f"line {lineno}: not a JSON object"
                continue
            yield lineno, obj, problem
