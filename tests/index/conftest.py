"""PubMed XML written by the tests: ``article(pmid, title, (label, text), ...)`` and ``write_xml(path, articles,
deleted)`` (gzip-compressed when the name ends in .gz)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest


def pubmed_article(pmid: str, title: str, *sections: tuple[str | None, str]) -> str:
    abstract = "".join(
        f'<AbstractText Label="{label}" NlmCategory="X">{text}</AbstractText>' if label else f"<AbstractText>{text}</AbstractText>"
        for label, text in sections
    )
    abstract_xml = f"<Abstract>{abstract}</Abstract>" if sections else ""
    return (
        f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{pmid}</PMID>'
        f"<Article><Journal><Title>J</Title></Journal><ArticleTitle>{title}</ArticleTitle>{abstract_xml}</Article>"
        f'<CommentsCorrectionsList><CommentsCorrections><PMID Version="1">999{pmid}</PMID></CommentsCorrections>'
        f"</CommentsCorrectionsList></MedlineCitation><PubmedData/></PubmedArticle>\n"
    )


def pubmed_xml(articles: list[str], deleted: list[str] = ()) -> str:
    deletes = "".join(f'<PMID Version="1">{p}</PMID>' for p in deleted)
    tail = f"<DeleteCitation>{deletes}</DeleteCitation>\n" if deleted else ""
    return '<?xml version="1.0" encoding="utf-8"?>\n<PubmedArticleSet>\n' + "".join(articles) + tail + "</PubmedArticleSet>\n"


def write_xml(path: Path, articles: list[str], deleted: list[str] = ()) -> Path:
    data = pubmed_xml(articles, deleted).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture
def article() -> Callable[..., str]:
    return pubmed_article


@pytest.fixture
def xml_file() -> Callable[..., Path]:
    return write_xml
