"""Write side of the sparse index: stream documents from the corpus store into tantivy with a bounded writer
heap, committing every ``commit_every`` documents. A killed build resumes after the last commit (tantivy drops
uncommitted documents; the largest committed ``pos`` says where to continue, per part), and an update deletes
dead positions and appends new ones. See :mod:`ragroute.rag.sparse` for the layout and the analyzer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ragroute.rag.sparse import POS_FIELD, TEXT_FIELD, AnalyzerSettings, open_tantivy, part_dirs

log = logging.getLogger("ragroute.index")


def indexed_until(index: Any) -> int:
    """One past the largest committed position (0 for an empty index): where a resumed build continues."""
    import tantivy

    index.reload()
    searcher = index.searcher()
    if searcher.num_docs == 0:
        return 0
    hits = searcher.search(tantivy.Query.all_query(), limit=1, count=False, order_by_field=POS_FIELD).hits
    return int(searcher.fast_field_values(POS_FIELD, [hits[0][1]])[0]) + 1 if hits else 0


def resume_points(directory: Path, settings: AnalyzerSettings, parts: int) -> list[int]:
    """Per part, the first position it still needs (parts commit one after another, so a kill between their
    commits leaves them at different points)."""
    return [indexed_until(open_tantivy(d, settings, create=True)) for d in part_dirs(directory, parts)]


def add_documents(
    directory: Path,
    settings: AnalyzerSettings,
    batches: Iterable[tuple[int, list[str], list[str]]],
    parts: int = 1,
    heap_mb: int = 256,
    threads: int = 1,
    commit_every: int = 200_000,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Index ``(first_pos, ids, texts)`` batches (as ``CorpusStore.iter_texts`` yields them) into the parts,
    position p into part p % parts, skipping what a part already holds; returns the number of documents added.
    Memory: the writer heaps (``heap_mb`` in all) plus one batch."""
    import tantivy

    starts = resume_points(directory, settings, parts)
    writers = [open_tantivy(d, settings).writer(heap_size=heap_mb // parts * 2**20, num_threads=threads)
               for d in part_dirs(directory, parts)]
    added = since_commit = 0
    for first, _, texts in batches:
        for pos, text in enumerate(texts, start=first):
            if pos < starts[pos % parts]:
                continue
            doc = tantivy.Document()
            doc.add_unsigned(POS_FIELD, pos)
            doc.add_text(TEXT_FIELD, text)
            writers[pos % parts].add_document(doc)
            added += 1
            since_commit += 1
        if since_commit >= commit_every:
            for writer in writers:
                writer.commit()
            since_commit = 0
        if on_batch is not None:
            on_batch(len(texts))
    for writer in writers:
        writer.commit()
        writer.wait_merging_threads()
    return added


def delete_positions(directory: Path, settings: AnalyzerSettings, positions: np.ndarray, parts: int = 1,
                     chunk: int = 10_000) -> int:
    """Delete the documents at ``positions`` (superseded or deleted rows of an update), each from its part. By
    query: a delete by term on the u64 field matches nothing in tantivy-py 0.27. Python ints are made one chunk
    at a time: every dead row of the store is sent at each sync."""
    import tantivy

    for part, part_dir in enumerate(part_dirs(directory, parts)):
        mine = positions[positions % parts == part]
        if not len(mine):
            continue
        index = open_tantivy(part_dir, settings)
        writer = index.writer(heap_size=64 * 2**20, num_threads=1)
        for lo in range(0, len(mine), chunk):
            values = mine[lo : lo + chunk].tolist()
            writer.delete_documents_by_query(tantivy.Query.term_set_query(index.schema, POS_FIELD, values))
        writer.commit()
        writer.wait_merging_threads()
    return len(positions)
