"""Streaming readers of corpus input files: JSONL, PubMedQA ``ori_pqal`` JSON, Parquet, Arrow, PubMed XML.

Every reader yields, in file order, a :class:`~ragroute.rag.corpus.Document` per usable record, a
:class:`Deletion` per deleted id (PubMed update files) and a :class:`Problem` per record or file part it could not
use, with its location (``file:line N`` or ``file:record N``). Nothing is dropped silently and nothing bad in one
file stops the others: a reader that hits a truncated or corrupt file yields a problem and ends that file.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.errors import UserError
from ragroute.rag.corpus import Document, _document_from_row, _is_pubmedqa, _iter_jsonl


@dataclass
class Deletion:
    id: str
    location: str


@dataclass
class Problem:
    kind: str  # a short category ("malformed JSON", "no abstract", "truncated file") that problems are counted by
    location: str
    detail: str = ""


SourceItem = Document | Deletion | Problem
MAX_EXAMPLES = 20


@dataclass
class ProblemLog:
    """Counts of problems by kind, with the first locations of each, for the manifest and the build's report."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] = self.counts.get(problem.kind, 0) + 1
        shown = self.examples.setdefault(problem.kind, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(f"{problem.location}: {problem.detail}" if problem.detail else problem.location)

    def merge(self, other: dict[str, Any]) -> None:
        for kind, n in other.get("counts", {}).items():
            self.counts[kind] = self.counts.get(kind, 0) + n
            shown = self.examples.setdefault(kind, [])
            shown.extend(other.get("examples", {}).get(kind, [])[: MAX_EXAMPLES - len(shown)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "counts": dict(self.counts), "examples": dict(self.examples)}

    def summary(self) -> str:
        return "; ".join(f"{n} {kind} (first: {self.examples[kind][0]})" for kind, n in self.counts.items())


def _from_row(row: dict[str, Any], location: str) -> SourceItem:
    result = _document_from_row(row)
    return result if isinstance(result, Document) else Problem(result, location)


def iter_jsonl_documents(path: Path) -> Iterator[SourceItem]:
    lineno = 0
    try:
        for lineno, row, problem in _iter_jsonl(path):
            location = f"{path}:line {lineno}"
            if row is None:
                yield Problem((problem or "unreadable").split(": ", 1)[-1], location)
            else:
                yield _from_row(row, location)
    except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt .jsonl.gz
        yield Problem("truncated file", str(path), f"{type(exc).__name__}: {exc} (after line {lineno})")


def iter_pubmedqa_documents(path: Path, data: dict[str, Any]) -> Iterator[SourceItem]:
    """PubMedQA ``ori_pqal.json``: id = PMID, no title (the question is the paper's title), text = CONTEXTS."""
    for pmid, item in data.items():
        contexts = item.get("CONTEXTS") if isinstance(item, dict) else None
        if not contexts:
            yield Problem("no CONTEXTS", f"{path}:PMID {pmid}")
            continue
        yield Document(id=str(pmid), title="", text=" ".join(str(c) for c in contexts))


def _record_batches(path: Path) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=8192)
        return
    source = pa.memory_map(str(path), "r")
    try:
        reader: Any = pa.ipc.open_file(source)
        batches: Iterator[Any] = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:  # the stream format (what `datasets` writes), not the file format
        source.seek(0)
        batches = iter(pa.ipc.open_stream(source))
    yield from batches


def iter_arrow_documents(path: Path) -> Iterator[SourceItem]:
    """Parquet (``.parquet``) or Arrow IPC (``.arrow``/``.feather``, file or stream format) in record batches."""
    import pyarrow as pa

    record = 0
    try:
        for batch in _record_batches(path):
            for row in batch.to_pylist():
                record += 1
                yield _from_row(row, f"{path}:record {record}")
    except (pa.ArrowException, OSError) as exc:
        yield Problem("unreadable file", f"{path}:record {record + 1}", f"{type(exc).__name__}: {exc}")


def iter_json_documents(path: Path) -> Iterator[SourceItem]:
    """A ``.json`` file: PubMedQA when it is one, else JSONL content under a .json name."""
    with path.open("rb") as fh:
        head = fh.read(1).lstrip()
    if head == b"{":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if _is_pubmedqa(data):
            yield from iter_pubmedqa_documents(path, data)
            return
    yield from iter_jsonl_documents(path)


def source_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".xml", ".xml.gz")):
        return "pubmed-xml"
    if name.endswith((".parquet", ".arrow", ".feather")):
        return "arrow"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    raise UserError(f"{path}: unknown input type (use .jsonl[.gz], .json, .parquet, .arrow, .feather, .xml[.gz])")


def iter_source(path: Path) -> Iterator[SourceItem]:
    """Documents, deletions and problems of one input file, streamed."""
    kind = source_kind(path)
    if kind == "pubmed-xml":
        from index.pubmed_xml import iter_pubmed_xml

        return iter_pubmed_xml(path)
    if kind == "arrow":
        return iter_arrow_documents(path)
    if kind == "json":
        return iter_json_documents(path)
    return iter_jsonl_documents(path)


def check_inputs(inputs: list[str]) -> list[Path]:
    """The input paths, each an existing file of a known type (UserError naming the first one that is not)."""
    paths = [Path(p).expanduser() for p in inputs]
    if not paths:
        raise UserError("no input files given")
    for path in paths:
        if path.is_dir():
            raise UserError(f"input {path} is a directory: give its files (e.g. {path}/*.xml.gz)")
        if not path.exists():  # a named pipe (mkfifo) is read like a file
            raise UserError(f"input file not found: {path}")
        source_kind(path)
    return paths
