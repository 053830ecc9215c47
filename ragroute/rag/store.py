"""The corpus on disk: a directory of Arrow segments that documents are read from by position.

Layout of a store directory (written by ``ragroute corpus build`` / ``index.corpus_build``)::

    manifest.json            format, rows, live, fingerprint, segments, lookups, dead mask, sources, history
    segments/NNNNNN.arrow    Arrow IPC file, columns id, title, text (one per input file of a build or an update)
    lookup/NNNNNN.hash.npy   sorted 64-bit hashes of the ids of one build or update ...
    lookup/NNNNNN.pos.npy    ... and the row position of each (same order)
    dead.NNNNNN.npy          bool per row: True = deleted or superseded (the manifest names the current one)

A row's POSITION (its global row number over all segments) never changes: an update appends rows and marks the
rows it replaces or deletes dead, so index files that refer to positions stay valid. Nothing here reads the
whole corpus into Python memory: rows are read with ``pread`` (:class:`SegmentFile`), the lookups and the dead
mask are memory-mapped, and ``position_of`` binary-searches the
hash arrays (newest lookup first: the newest row of an id is the only one that can be live) and confirms the id
in the segment, so a hash collision cannot return the wrong document.

:class:`InMemoryCorpus` is the same read protocol over a list of documents (the PubMedQA file, the demo), so the
pipeline has one code path for both.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragroute.errors import UserError
from ragroute.rag.corpus import Document

STORE_FORMAT = "ragroute-corpus/1"
MANIFEST = "manifest.json"
COLUMNS = ("id", "title", "text")
TextBatch = tuple[int, list[str], list[str]]  # (first position, ids, texts as indexed)


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """Stable 64-bit hash of each id (blake2b), the key of the on-disk id lookup."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") for i in ids),
        dtype=np.uint64,
    )


def indexed_text(title: str, text: str) -> str:
    """The text an index sees for a document: title and abstract on two lines (the abstract alone without title)."""
    return f"{title}\n{text}" if title else text


def is_store(path: str | Path) -> bool:
    """True when ``path`` is a corpus store directory (has a store manifest)."""
    return (Path(path) / MANIFEST).is_file()


class CorpusReader(Protocol):
    """What the pipeline and the index builders read documents through (a store or an in-memory list)."""

    fingerprint: str

    def __len__(self) -> int: ...
    def document(self, pos: int) -> Document: ...
    def documents(self, positions: Sequence[int]) -> list[Document]: ...
    def live_mask(self) -> np.ndarray: ...
    def position_of(self, doc_id: str) -> int | None: ...
    def iter_texts(self, start: int = 0, stop: int | None = None, batch_size: int = 4096) -> Iterator[TextBatch]: ...


def read_format_manifest(directory: str | Path, fmt: str, what: str, command: str) -> dict[str, Any]:
    """``DIR/manifest.json`` of a directory of format ``fmt`` (a corpus store, a built index); a missing,
    unreadable or foreign manifest is a UserError naming ``what`` the directory should be and the ``command``
    that makes one."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise UserError(f"{directory} is not {what} (no {MANIFEST}); build one with `{command}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if manifest.get("format") != fmt:
        raise UserError(f"{path}: format {manifest.get('format')!r} is not {fmt!r}")
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    return read_format_manifest(directory, STORE_FORMAT, "a corpus store", "ragroute corpus build")


MAX_OPEN_SEGMENTS = 256  # open segment files at once (a PubMed baseline store has ~1,300 segments)


class SegmentFile:
    """One Arrow IPC segment read with ``pread``: the file is memory-mapped only while its metadata (where each
    record batch's string buffers lie) is read, then rows are read as byte ranges. Reading through a memory map
    would leave every touched page in the process's RSS (the kernel maps page-cache folios of up to a few MB per
    random read: 1,000 random documents cost ~1 GB of RSS on the development machine)."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.fd = -1
        source = pa.memory_map(str(path), "r")
        reader = pa.ipc.open_file(source)
        source.seek(0)
        base = source.read_buffer(1).address  # zero-copy: the map's first byte
        rows, buffers = [], []
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            rows.append(batch.num_rows)
            # per column: file offset of its int32 offsets (at its first row) and of its character data
            buffers.append([(offsets.address - base + 4 * col.offset, data.address - base if data.size else 0)
                            for col in batch.columns for _, offsets, data in [col.buffers()]])
        del batch, reader
        source.close()
        self.batch_starts = np.cumsum([0, *rows], dtype=np.int64)
        self.buffers = np.array(buffers, dtype=np.int64).reshape(len(rows), len(COLUMNS), 2)
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, start: int, stop: int, column: int) -> list[str]:
        """Values of one column for rows [start, stop) of the segment."""
        out: list[str] = []
        while start < stop:
            b = int(np.searchsorted(self.batch_starts, start, side="right")) - 1
            row, n = start - int(self.batch_starts[b]), min(stop, int(self.batch_starts[b + 1])) - start
            offsets_at, data_at = (int(x) for x in self.buffers[b, column])
            offsets = np.frombuffer(os.pread(self.fd, 4 * (n + 1), offsets_at + 4 * row), dtype=np.int32)
            size = int(offsets[-1] - offsets[0])
            data = os.pread(self.fd, size, data_at + int(offsets[0])) if size else b""
            bounds = (offsets - offsets[0]).tolist()
            out.extend(data[bounds[i] : bounds[i + 1]].decode("utf-8") for i in range(n))
            start += n
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a segment evicted from a store's cache closes once no read holds it
        self.close()


class CorpusStore:
    """Read side of a corpus store directory: documents by position, the live rows, an id's live position."""

    def __init__(self, directory: Path, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self.manifest = manifest
        self.fingerprint: str = manifest["fingerprint"]
        self._rows = int(manifest["rows"])
        self._segments: list[dict[str, Any]] = manifest["segments"]
        self._starts = np.array([s["first_pos"] for s in self._segments] + [self._rows], dtype=np.int64)
        self._open_segments: dict[int, SegmentFile] = {}

    @classmethod
    def open(cls, directory: str | Path) -> CorpusStore:
        directory = Path(directory)
        return cls(directory, read_manifest(directory))

    def __len__(self) -> int:
        return self._rows

    @property
    def live(self) -> int:
        return int(self.manifest["live"])

    # ------------------------------------------------------------------------------------------ segments

    def _segment(self, seg: int) -> SegmentFile:
        segment = self._open_segments.get(seg)
        if segment is None:
            if len(self._open_segments) >= MAX_OPEN_SEGMENTS:
                self._open_segments = {}  # not closed here: a read in another thread may still use one
            segment = self._open_segments[seg] = SegmentFile(self.directory / self._segments[seg]["file"])
        return segment

    def _close_segments(self) -> None:
        for segment in self._open_segments.values():
            segment.close()
        self._open_segments.clear()

    def _locate(self, pos: int) -> tuple[SegmentFile, int]:
        if not 0 <= pos < self._rows:
            raise IndexError(f"position {pos} out of range (store has {self._rows} rows)")
        seg = int(np.searchsorted(self._starts, pos, side="right")) - 1
        return self._segment(seg), pos - int(self._starts[seg])

    def _id_at(self, pos: int) -> str:
        segment, row = self._locate(pos)
        return segment.read(row, row + 1, 0)[0]

    def document(self, pos: int) -> Document:
        segment, row = self._locate(int(pos))
        return Document(*(segment.read(row, row + 1, c)[0] for c in range(len(COLUMNS))))

    def documents(self, positions: Sequence[int]) -> list[Document]:
        """Documents at these positions, in the order given."""
        return [self.document(p) for p in positions]

    # ------------------------------------------------------------------------------------ live rows, ids

    @cached_property
    def _dead(self) -> np.ndarray:
        return np.load(self.directory / self.manifest["dead"], mmap_mode="r")

    def live_mask(self) -> np.ndarray:
        """Bool per row, False where the row was deleted or superseded by an update."""
        return ~np.asarray(self._dead, dtype=bool)

    def is_live(self, pos: int) -> bool:
        return not bool(self._dead[pos])

    @cached_property
    def _lookups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(sorted hashes, positions) of each build/update, newest first, memory-mapped."""
        return [
            (np.load(self.directory / lk["hash"], mmap_mode="r"), np.load(self.directory / lk["pos"], mmap_mode="r"))
            for lk in reversed(self.manifest["lookups"])
        ]

    def newest_position(self, doc_id: str) -> int | None:
        """The newest row holding ``doc_id``, live or dead (None if the id was never stored)."""
        key = id_hashes([doc_id])[0]
        for hashes, positions in self._lookups:
            lo, hi = np.searchsorted(hashes, key, side="left"), np.searchsorted(hashes, key, side="right")
            matches = [int(p) for p in positions[lo:hi] if self._id_at(int(p)) == doc_id]
            if matches:
                return max(matches)
        return None

    def position_of(self, doc_id: str) -> int | None:
        """The live row of ``doc_id``; None when it is not in the store or was deleted."""
        pos = self.newest_position(str(doc_id))
        return pos if pos is not None and self.is_live(pos) else None

    # -------------------------------------------------------------------------------------------- texts

    def iter_texts(self, start: int = 0, stop: int | None = None, batch_size: int = 4096) -> Iterator[TextBatch]:
        """(first position, ids, texts as indexed) in position order over rows [start, stop), dead rows included
        (an index keeps positions aligned and filters with :meth:`live_mask`)."""
        stop = self._rows if stop is None else min(stop, self._rows)
        for first in range(start, stop, batch_size):
            ids, texts = self._read_range(first, min(first + batch_size, stop))
            yield first, ids, texts

    def _read_range(self, start: int, stop: int) -> tuple[list[str], list[str]]:
        """Ids and indexed texts of rows [start, stop), which may span segments."""
        ids: list[str] = []
        texts: list[str] = []
        while start < stop:
            segment, row = self._locate(start)
            n = min(stop, int(self._starts[np.searchsorted(self._starts, start, "right")])) - start
            seg_ids, titles, seg_texts = (segment.read(row, row + n, c) for c in range(len(COLUMNS)))
            ids += seg_ids
            texts += [indexed_text(t, x) for t, x in zip(titles, seg_texts, strict=True)]
            start += n
        return ids, texts

    def close(self) -> None:
        self._close_segments()


def open_corpus(path: str | Path) -> CorpusStore | InMemoryCorpus:
    """A store directory as a :class:`CorpusStore`; any file ``load_corpus`` reads (or ``demo``) in memory."""
    if is_store(path):
        return CorpusStore.open(path)
    from ragroute.rag.corpus import load_corpus

    return InMemoryCorpus(load_corpus(str(path)))


class InMemoryCorpus:
    """The store's read protocol over documents held in memory (small corpora: PubMedQA files, the demo)."""

    def __init__(self, docs: list[Document]) -> None:
        self.docs = docs
        self._positions = {d.id: i for i, d in enumerate(docs)}
        self.directory = None

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for d in self.docs:
            digest.update(json.dumps([d.id, d.title, d.text], ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()[:16]

    @property
    def manifest(self) -> dict[str, Any]:
        n = len(self.docs)
        return {"format": "in-memory", "rows": n, "live": n, "fingerprint": self.fingerprint}

    def __len__(self) -> int:
        return len(self.docs)

    def document(self, pos: int) -> Document:
        return self.docs[pos]

    def documents(self, positions: Sequence[int]) -> list[Document]:
        return [self.docs[int(p)] for p in positions]

    def live_mask(self) -> np.ndarray:
        return np.ones(len(self.docs), dtype=bool)

    def close(self) -> None:
        pass

    def position_of(self, doc_id: str) -> int | None:
        return self._positions.get(str(doc_id))

    def iter_texts(self, start: int = 0, stop: int | None = None, batch_size: int = 4096) -> Iterator[TextBatch]:
        stop = len(self.docs) if stop is None else min(stop, len(self.docs))
        for first in range(start, stop, batch_size):
            chunk = self.docs[first : min(first + batch_size, stop)]
            yield first, [d.id for d in chunk], [indexed_text(d.title, d.text) for d in chunk]
