"""Writing a corpus store: Arrow segments streamed from input files, then one commit of a generation of them.

A GENERATION is what one build or one update adds: one segment per input file, one id lookup (sorted hashes +
positions), a new dead-row mask and a new manifest. The manifest is written last and atomically (temp file,
fsync, rename): until then readers see the previous store, and a killed update leaves only unreferenced files,
removed by the next update.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.sources import Deletion, Problem, ProblemLog, iter_source, source_kind
from ragroute.rag.corpus import Document
from ragroute.rag.store import COLUMNS, MANIFEST, STORE_FORMAT, CorpusStore, SegmentFile, id_hashes

BATCH_ROWS = 8192
BATCH_BYTES = 64 << 20  # a record batch holds at most ~64 MB of text, whatever the documents' length


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that a crash leaves the old file or the new one, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class SegmentResult:
    """One input file written as one segment (the JSON beside it, which also marks it done)."""

    name: str  # file stem under segments/: NNNNNN for a build's input N, uGGGGGG-NNNNNN for update G
    source: dict[str, Any]
    rows: int = 0
    deletes: list[str] = field(default_factory=list)
    problems: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def stem(self) -> str:
        return f"segments/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "rows": self.rows, "deletes": self.deletes,
                "problems": self.problems, "sha256": self.sha256}


def source_info(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "kind": source_kind(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class _BatchedArrowWriter:
    """Documents to an Arrow IPC file in bounded record batches; keeps the 64-bit hash of every id."""

    def __init__(self, path: Path, on_flush: Callable[[int], None]) -> None:
        import pyarrow as pa

        self._on_flush = on_flush
        self._pa = pa
        schema = pa.schema([(c, pa.string()) for c in COLUMNS])
        self._writer = pa.ipc.new_file(str(path), schema)
        self._columns: tuple[list[str], list[str], list[str]] = ([], [], [])
        self._bytes = 0
        self.hashes: list[np.ndarray] = []
        self.rows = 0

    def add(self, doc: Document) -> None:
        ids, titles, texts = self._columns
        ids.append(doc.id)
        titles.append(doc.title)
        texts.append(doc.text)
        self._bytes += len(doc.text) + len(doc.title)
        if len(ids) >= BATCH_ROWS or self._bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        ids = self._columns[0]
        if not ids:
            return
        arrays = [self._pa.array(col, type=self._pa.string()) for col in self._columns]
        self._writer.write_batch(self._pa.record_batch(arrays, names=list(COLUMNS)))
        self.hashes.append(id_hashes(ids))
        self.rows += len(ids)
        self._on_flush(len(ids))
        self._columns, self._bytes = ([], [], []), 0

    def close(self) -> None:
        self.flush()
        self._writer.close()


def _no_progress(_: int) -> None:
    pass


def write_segment(directory: Path, name: str, path: Path,
                  on_docs: Callable[[int], None] = _no_progress) -> SegmentResult:
    """Stream one input file into ``segments/NAME.arrow`` (+ ``.idhash.npy`` and the ``.json`` done marker)."""
    result = SegmentResult(name=name, source=source_info(path))
    problems = ProblemLog()
    arrow_path = directory / f"{result.stem}.arrow"
    tmp = arrow_path.with_name(arrow_path.name + ".tmp")
    writer = _BatchedArrowWriter(tmp, on_docs)
    for item in iter_source(path):
        if isinstance(item, Document):
            writer.add(item)
        elif isinstance(item, Deletion):
            result.deletes.append(item.id)
        elif isinstance(item, Problem):
            problems.add(item)
    writer.close()
    os.replace(tmp, arrow_path)
    hashes = np.concatenate(writer.hashes) if writer.hashes else np.zeros(0, dtype=np.uint64)
    save_npy_atomic(directory / f"{result.stem}.idhash.npy", hashes)
    result.rows, result.problems, result.sha256 = writer.rows, problems.to_dict(), file_sha256(arrow_path)
    write_json_atomic(directory / f"{result.stem}.json", result.to_dict())
    return result


@dataclass
class DeadRows:
    """What one generation marks dead: older rows of ids it brings again, and rows of ids it deletes."""

    mask: np.ndarray  # bool per row of the whole store after the generation
    replaced: int = 0
    deleted: int = 0
    deletes_unknown: int = 0  # DeleteCitation ids not (or no longer) in the store
    newly_dead: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sorted positions


def _newest_in(sorted_hash: np.ndarray, sorted_pos: np.ndarray, doc_id: str, reader: CorpusStore) -> int | None:
    key = id_hashes([doc_id])[0]
    lo, hi = np.searchsorted(sorted_hash, key, "left"), np.searchsorted(sorted_hash, key, "right")
    matches = [int(p) for p in sorted_pos[lo:hi] if reader._id_at(int(p)) == doc_id]
    return max(matches) if matches else None


def _supersede_within(dead: DeadRows, sorted_hash: np.ndarray, sorted_pos: np.ndarray, reader: CorpusStore) -> None:
    """Rows of one generation that a later row of the same id replaces. Only repeated hashes (duplicate ids, or
    64-bit collisions: rare) are resolved by reading ids, so this stays vectorised at 24M rows."""
    repeated = np.flatnonzero(sorted_hash[1:] == sorted_hash[:-1])
    candidates = [int(sorted_pos[i]) for i in np.unique(np.concatenate([repeated, repeated + 1]))]
    newest: dict[str, int] = {}
    for pos in candidates:
        doc_id = reader._id_at(pos)
        newest[doc_id] = max(newest.get(doc_id, -1), pos)
    for pos in candidates:
        if newest[reader._id_at(pos)] != pos:
            dead.mask[pos] = True
            dead.replaced += 1


def _supersede_old(dead: DeadRows, new_ids: Iterable[str], old: CorpusStore) -> None:
    """Live rows of the store before this update whose id the update brings again."""
    for doc_id in new_ids:
        pos = old.newest_position(doc_id)
        if pos is not None and not dead.mask[pos]:
            dead.mask[pos] = True
            dead.replaced += 1


def _apply_deletes(dead: DeadRows, segments: list[SegmentResult], base: int, lookup: tuple, reader: CorpusStore,
                   old: CorpusStore | None) -> None:
    """A DeleteCitation kills the id's newest row written before the end of its file (a later file may add it
    again)."""
    end = base
    for seg in segments:
        end += seg.rows
        for doc_id in seg.deletes:
            pos = _newest_in(*lookup, doc_id, reader)
            if pos is None and old is not None:
                pos = old.newest_position(doc_id)
            if pos is None or pos >= end or dead.mask[pos]:
                dead.deletes_unknown += pos is None or bool(dead.mask[pos])
                continue
            dead.mask[pos] = True
            dead.deleted += 1


def segment_entries(segments: list[SegmentResult], first_pos: int) -> list[dict[str, Any]]:
    entries = []
    for seg in segments:
        if seg.rows:
            entries.append({"file": f"{seg.stem}.arrow", "first_pos": first_pos, "rows": seg.rows,
                            "sha256": seg.sha256, "source": seg.source["path"]})
        first_pos += seg.rows
    return entries


def _write_lookup(directory: Path, gen: int, segments: list[SegmentResult], base: int) -> dict[str, Any]:
    """The generation's id lookup: its ids' hashes sorted, and each one's position (stable: older rows first)."""
    parts = [np.load(directory / f"{seg.stem}.idhash.npy") for seg in segments]
    hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    order = np.argsort(hashes, kind="stable")
    entry = {"hash": f"lookup/{gen:06d}.hash.npy", "pos": f"lookup/{gen:06d}.pos.npy", "first_pos": base,
             "rows": int(hashes.size)}
    (directory / "lookup").mkdir(exist_ok=True)
    save_npy_atomic(directory / entry["hash"], hashes[order])
    save_npy_atomic(directory / entry["pos"], (order + base).astype(np.int64))
    return entry


def _new_ids(directory: Path, segments: list[SegmentResult]) -> Iterator[str]:
    """The ids of the new segments, read a segment at a time (the id column only)."""
    for seg in segments:
        if seg.rows:
            segment = SegmentFile(directory / f"{seg.stem}.arrow")
            try:
                yield from segment.read(0, seg.rows, 0)
            finally:
                segment.close()


def commit_generation(directory: Path, old_manifest: dict[str, Any] | None, segments: list[SegmentResult],
                      action: str) -> tuple[dict[str, Any], DeadRows]:
    """Make the written segments part of the store: lookup, dead mask, fingerprint, manifest (written last)."""
    old = old_manifest or {"rows": 0, "segments": [], "lookups": [], "history": [], "fingerprint": "",
                           "sources": [], "problems": {}}
    base, gen = int(old["rows"]), len(old["history"])
    rows = base + sum(seg.rows for seg in segments)
    lookup_entry = _write_lookup(directory, gen, segments, base)
    manifest = {**old, "rows": rows, "segments": old["segments"] + segment_entries(segments, base),
                "lookups": old["lookups"] + [lookup_entry]}
    reader = CorpusStore(directory, {**manifest, "fingerprint": ""})
    old_store = CorpusStore(directory, old_manifest) if old_manifest else None
    dead = DeadRows(mask=np.zeros(rows, dtype=bool))
    if old_store is not None:
        dead.mask[:base] = ~old_store.live_mask()
    before = dead.mask.copy()
    lookup = (np.load(directory / lookup_entry["hash"]), np.load(directory / lookup_entry["pos"]))
    _supersede_within(dead, *lookup, reader)
    if old_store is not None:
        _supersede_old(dead, _new_ids(directory, segments), old_store)
    _apply_deletes(dead, segments, base, lookup, reader, old_store)
    reader.close()
    if old_store is not None:
        old_store.close()
    dead.newly_dead = np.flatnonzero(dead.mask & ~before).astype(np.int64)
    digest = hashlib.sha256(old["fingerprint"].encode())
    for seg in segments:
        digest.update(seg.sha256.encode())
    digest.update(dead.newly_dead.tobytes())
    manifest["dead"] = f"dead.{gen:06d}.npy"
    save_npy_atomic(directory / manifest["dead"], dead.mask)
    _finish_manifest(manifest, old, segments, dead, action, digest.hexdigest()[:24], base)
    write_json_atomic(directory / MANIFEST, manifest)
    return manifest, dead  # the previous dead mask stays for readers of the previous manifest (next update drops it)


def _finish_manifest(manifest: dict[str, Any], old: dict[str, Any], segments: list[SegmentResult], dead: DeadRows,
                     action: str, fingerprint: str, base: int) -> None:
    problems = ProblemLog()
    problems.merge(old["problems"])
    for seg in segments:
        problems.merge(seg.problems)
    manifest["fingerprint"] = fingerprint
    manifest["live"] = int(manifest["rows"] - int(dead.mask.sum()))
    manifest["problems"] = problems.to_dict()
    manifest["sources"] = old["sources"] + [
        {**seg.source, "rows": seg.rows, "deletes": len(seg.deletes), "problems": seg.problems.get("total", 0),
         "generation": len(old["history"])} for seg in segments]
    manifest["history"] = old["history"] + [{
        "action": action, "at": time_stamp(), "first_pos": base, "added": sum(s.rows for s in segments),
        "replaced": dead.replaced, "deleted": dead.deleted, "deletes_unknown": dead.deletes_unknown,
        "fingerprint": fingerprint}]
    manifest["format"] = STORE_FORMAT


def time_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
