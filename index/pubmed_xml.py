"""PubMed baseline / update files (``PubmedArticleSet`` XML, ``.xml`` or ``.xml.gz``), parsed incrementally.

Each ``PubmedArticle`` (and ``PubmedBookArticle``) becomes a document: id = PMID, title = ArticleTitle (BookTitle
for books), text = the AbstractText sections, a labelled section as ``LABEL: text``, one section a line. Articles
without an abstract are counted as problems of kind ``no abstract`` (about a third of PubMed) rather than stored.
``DeleteCitation`` PMIDs become deletions. Elements are cleared as soon as they are read, so memory stays flat
on 30k-article files; a truncated or corrupt file yields the articles before the damage and a problem naming
the line.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from xml.etree import ElementTree

from index.sources import Deletion, Problem, SourceItem
from ragroute.rag.corpus import Document

ARTICLE_TAGS = ("PubmedArticle", "PubmedBookArticle")


def _text(elem: ElementTree.Element | None) -> str:
    return " ".join("".join(elem.itertext()).split()) if elem is not None else ""


def abstract_text(article: ElementTree.Element) -> str:
    """The abstract's sections, each ``LABEL: text`` when labelled, one a line."""
    sections = []
    for part in article.iterfind(".//Abstract/AbstractText"):
        text = _text(part)
        label = part.get("Label")
        if text:
            sections.append(f"{label}: {text}" if label else text)
    return "\n".join(sections)


def article_document(article: ElementTree.Element, location: str) -> Document | Problem:
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


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _parse(fh: IO[bytes], path: Path) -> Iterator[SourceItem]:
    articles = 0
    root = None
    for event, elem in ElementTree.iterparse(fh, events=("start", "end")):
        if root is None:
            root = elem
        if event != "end":
            continue
        if elem.tag in ARTICLE_TAGS:
            articles += 1
            yield article_document(elem, f"{path}:record {articles}")
            root.clear()  # drop the finished article (and any before it) from the tree
        elif elem.tag == "DeleteCitation":
            for pmid in elem.iterfind("PMID"):
                yield Deletion(_text(pmid), f"{path}:DeleteCitation")
            root.clear()


def iter_pubmed_xml(path: Path) -> Iterator[SourceItem]:
    """Documents, deletions and problems of one PubMed XML file; damage ends the file with a problem."""
    with _open(path) as fh:
        try:
            yield from _parse(fh, path)
        except ElementTree.ParseError as exc:
            line, column = exc.position
            yield Problem("corrupt XML", f"{path}:line {line}", f"{exc} (the rest of the file is skipped)")
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            yield Problem("truncated file", str(path), f"{type(exc).__name__}: {exc} (the rest of the file is skipped)")
