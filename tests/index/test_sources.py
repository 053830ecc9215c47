"""Streaming readers of corpus inputs on real files written by the tests: PubMed XML (plain, gzip, truncated,
corrupt), JSONL, PubMedQA JSON, Parquet and Arrow."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index.sources import Deletion, Problem, iter_source
from ragroute.errors import UserError
from ragroute.rag.corpus import Document, load_corpus


def split(items: list) -> tuple[list[Document], list[Deletion], list[Problem]]:
    return ([i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Deletion)],
            [i for i in items if isinstance(i, Problem)])


def test_pubmed_xml_gz_articles_sections_and_deletions(tmp_path: Path, article: Callable, xml_file: Callable) -> None:
    path = xml_file(tmp_path / "pubmed25n0001.xml.gz", [
        article("11", "Aspirin <i>in</i> pain", ("BACKGROUND", "Pain is common."), ("RESULTS", "It helped.")),
        article("12", "Statins", (None, "Statins lower   LDL.")),
        article("13", "A letter without abstract"),
    ], deleted=["5", "6"])
    docs, deletions, problems = split(list(iter_source(path)))
    assert docs == [
        Document("11", "Aspirin in pain", "BACKGROUND: Pain is common.\nRESULTS: It helped."),
        Document("12", "Statins", "Statins lower LDL."),
    ]
    assert [d.id for d in deletions] == ["5", "6"]
    assert [(p.kind, p.location) for p in problems] == [("no abstract", f"{path}:record 3 (PMID 13)")]


def test_truncated_xml_gz_keeps_every_article_before_the_cut(tmp_path: Path, article: Callable,
                                                            xml_file: Callable) -> None:
    whole = xml_file(tmp_path / "whole.xml.gz", [article(str(i), f"T{i}", (None, f"abstract {i} " * 40))
                                                 for i in range(2000)])
    cut = tmp_path / "cut.xml.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    readable = zlib.decompressobj(31).decompress(cut.read_bytes())  # what the first half still holds
    docs, _, problems = split(list(iter_source(cut)))
    assert len(docs) == readable.count(b"</PubmedArticle>") > 500
    assert [d.id for d in docs] == [str(i) for i in range(len(docs))]
    assert [(p.kind, p.location) for p in problems] == [("truncated file", str(cut))]
    assert f"after record {len(docs)}" in problems[0].detail


def test_multi_member_and_corrupt_gzip(tmp_path: Path, article: Callable, xml_file: Callable) -> None:
    """Two gzip members in one file (as `cat a.gz b.gz` makes) read as one stream; bytes that are not gzip at
    all are a problem of that file."""
    whole = xml_file(tmp_path / "w.xml.gz", [article(str(i), "T", (None, "x")) for i in range(5)]).read_bytes()
    members = tmp_path / "members.xml.gz"
    xml = gzip.decompress(whole)
    members.write_bytes(gzip.compress(xml[:100]) + gzip.compress(xml[100:]))
    assert [d.id for d in split(list(iter_source(members)))[0]] == ["0", "1", "2", "3", "4"]
    garbage = tmp_path / "garbage.xml.gz"
    garbage.write_bytes(b"this is not gzip" * 100)
    assert [p.kind for p in iter_source(garbage)] == ["corrupt gzip"]


def test_corrupt_xml_reports_its_line(tmp_path: Path, article: Callable) -> None:
    path = tmp_path / "bad.xml"
    good = article("1", "T", (None, "fine"))
    path.write_text('<?xml version="1.0"?>\n<PubmedArticleSet>\n' + good + "<PubmedArticle><<oops\n" + good)
    docs, _, problems = split(list(iter_source(path)))
    assert [d.id for d in docs] == ["1"]
    assert [(p.kind, p.location) for p in problems] == [("corrupt XML", f"{path}:line 4")]


def test_jsonl_problems_carry_their_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{broken\n\n{"title": "no id", "text": "y"}\n{"id": "b", "text": ""}\n')
    docs, _, problems = split(list(iter_source(path)))
    assert docs == [Document("a", "", "x")]
    assert [(p.kind, p.location) for p in problems] == [
        ("malformed JSON", f"{path}:line 2"), ("missing id", f"{path}:line 4"), ("empty text", f"{path}:line 5")]


def test_pubmedqa_json_matches_load_corpus(pqal_dev_path: Path) -> None:
    docs, _, problems = split(list(iter_source(pqal_dev_path)))
    assert docs == load_corpus(str(pqal_dev_path)) and not problems


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".feather"])
def test_parquet_and_arrow_columns_by_their_usual_names(tmp_path: Path, suffix: str) -> None:
    table = pa.table({"pmid": [1, 2, 3], "title": ["A", None, "C"], "abstract": ["x", "y", None]})
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, path)
    else:
        with pa.ipc.new_file(str(path), table.schema) as writer:
            writer.write_table(table)
    docs, _, problems = split(list(iter_source(path)))
    assert docs == [Document("1", "A", "x"), Document("2", "", "y")]
    assert [(p.kind, p.location) for p in problems] == [("empty text", f"{path}:record 3")]


def test_arrow_stream_format_as_datasets_writes_it(tmp_path: Path) -> None:
    table = pa.table({"id": ["a"], "text": ["x"]})
    path = tmp_path / "data-00000-of-00001.arrow"
    with pa.ipc.new_stream(str(path), table.schema) as writer:
        writer.write_table(table)
    assert list(iter_source(path)) == [Document("a", "", "x")]


def test_unknown_input_type_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    path.write_text("id,text\n")
    with pytest.raises(UserError, match="unknown input type"):
        list(iter_source(path))


def test_jsonl_gz_and_a_truncated_one(tmp_path: Path) -> None:
    lines = "".join(f'{{"id": "{i}", "text": "document number {i} {"x" * 50}"}}\n' for i in range(3000)).encode()
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(lines))
    docs, _, problems = split(list(iter_source(path)))
    assert len(docs) == 3000 and not problems
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    docs, _, problems = split(list(iter_source(cut)))
    assert 0 < len(docs) < 3000 and [d.id for d in docs] == [str(i) for i in range(len(docs))]
    assert [(p.kind, p.location) for p in problems] == [("truncated file", str(cut))]
