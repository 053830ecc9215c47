"""PubMed baseline / update files (``PubmedArticleSet`` XML, ``.xml`` or ``.xml.gz``), parsed incrementally.

Each ``PubmedArticle`` (and ``PubmedBookArticle``) becomes a document: id = PMID, title = ArticleTitle (BookTitle
for books), text = the AbstractText sections, a labelled section as ``LABEL: text``, one section a line. Articles
without an abstract are counted as problems of kind ``no abstract`` (about a third of PubMed) rather than stored.
``DeleteCitation`` PMIDs become deletions. Elements are cleared as soon as they are read, so memory stays flat
on 30k-article files; a truncated or corrupt file yields the articles before the damage and a problem naming
the line. lxml's pull parser hands over only the elements asked for (``tag=``), so the Python loop runs once an article,
not once an element.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lxml import etree

from index.sources import Deletion, Problem, SourceItem
from ragroute.rag.corpus import Document

ARTICLE_TAGS = ("PubmedArticle", "PubmedBookArticle")
CHUNK = 1 << 20  # bytes read at a time


def _text(elem: etree._Element | None) -> str:
    return " ".join("".join(elem.itertext()).split()) if elem is not None else ""


def abstract_text(article: etree._Element) -> str:
    """The abstract's sections, each ``LABEL: text`` when labelled, one a line."""
    sections = []
    for part in article.iterfind(".//Abstract/AbstractText"):
        text = _text(part)
        label = part.get("Label")
        if text:
            sections.append(f"{label}: {text}" if label else text)
    return "\n".join(sections)


def article_document(article: etree._Element, location: str) -> Document | Problem:
    pmid = _text(article.find("MedlineCitation/PMID"))
    if not pmid:
        pmid = _text(article.find("BookDocument/PMID"))
    if not pmid:
        return Problem("missing id", location)
    title = _text(article.find(".//ArticleTitle")) or _text(article.find(".//BookTitle"))
    text = abstract_text(article)
    if not text:
        return Problem("no abstract", f"{location} (PMID {pmid})")
    return Document(id=pmid, title=title, text=text)


def _gunzip(raw: IO[bytes]) -> Iterator[bytes]:
    """Decompressed bytes of a (multi-member) gzip stream as they come; EOFError after the last of them when the
    file ends inside a member. ``gzip.GzipFile.read`` would raise instead of returning the bytes it had."""
    decompressor, in_member = zlib.decompressobj(31), False
    while chunk := raw.read(CHUNK):
        while chunk:
            in_member = True
            if out := decompressor.decompress(chunk):
                yield out
            chunk = b""
            if decompressor.eof:
                chunk, decompressor, in_member = decompressor.unused_data, zlib.decompressobj(31), False
    if in_member:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as raw:
        if path.name.lower().endswith(".gz"):
            yield from _gunzip(raw)
        else:
            while chunk := raw.read(CHUNK):
                yield chunk


def _items(parser: etree.XMLPullParser, path: Path, counter: list[int]) -> Iterator[SourceItem]:
    """The finished articles and deletions the parser holds, each element dropped from the tree once read."""
    for _, elem in parser.read_events():
        if elem.tag == "DeleteCitation":
            for pmid in elem.iterfind("PMID"):
                yield Deletion(_text(pmid), f"{path}:DeleteCitation")
        else:
            counter[0] += 1
            yield article_document(elem, f"{path}:record {counter[0]}")
        elem.clear(keep_tail=True)
        while elem.getprevious() is not None:
            del elem.getparent()[0]


def iter_pubmed_xml(path: Path) -> Iterator[SourceItem]:
    """Documents, deletions and problems of one PubMed XML file; damage ends the file with a problem, after the
    articles before it (a pull parser keeps the events it made before an error, unlike ``iterparse``)."""
    parser = etree.XMLPullParser(events=("end",), tag=(*ARTICLE_TAGS, "DeleteCitation"), resolve_entities=False,
                                 no_network=True, huge_tree=True)
    counter = [0]
    problem = None
    try:
        for chunk in _chunks(path):
            parser.feed(chunk)
            yield from _items(parser, path, counter)
        parser.close()
    except etree.XMLSyntaxError as exc:
        problem = Problem("corrupt XML", f"{path}:line {exc.lineno}", f"{exc} (the rest of the file is skipped)")
    except EOFError as exc:
        problem = Problem("truncated file", str(path), f"{exc} (after record {counter[0]})")
    except zlib.error as exc:
        problem = Problem("corrupt gzip", str(path), f"{exc} (after record {counter[0]}; the rest is skipped)")
    yield from _items(parser, path, counter)
    if problem is not None:
        yield problem
