"""The corpus store at scale: `ragroute corpus build` rate and peak RSS, a reader's RSS, an update's cost.

Writes a synthetic JSONL of N documents (ids, 10-word titles, 80-250 words drawn from a 50k-word random
vocabulary: ~1.35 KB a document, PubMed's size), builds a store from it with the real command, then in fresh
processes: opens the store and reads 1000 random documents and the positions of their ids (RSS before and
after), streams every row through ``iter_texts``, and applies a PubMed XML update (30,000 articles, a third of
them replacing existing ids, plus 1,000 DeleteCitation PMIDs). Each step's peak RSS is its own process's.
Everything is written under a temporary directory that is removed at the end.

    .venv/bin/python bench/corpus_store.py --docs 1000000 --json bench/results/corpus_store.json

``--xml-files K``: the PubMed baseline path instead. K gzipped ``PubmedArticleSet`` files of docs/K articles each
(PMID, title, an abstract in four labelled sections, authors, MeSH headings, references: ~6.5 KB of XML an
article; the real baseline files hold ~30,000 articles each), built
with ``ragroute corpus build --workers W`` for each W of ``--workers`` (a fresh store each time): the XML parse
rate that the 24M build extrapolation needs.

    python bench/corpus_store.py --docs 960000 --xml-files 32 --workers 1,14 --json OUT.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 10))) for _ in range(50_000)]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            title = " ".join(rng.choices(vocab, k=10))
            text = " ".join(rng.choices(vocab, k=rng.randint(80, 250)))
            fh.write(json.dumps({"id": str(10_000_000 + i), "title": title, "text": text}) + "\n")


def write_update(path: Path, n_docs: int, seed: int = 1) -> None:
    """30,000 articles (10,000 existing ids, 20,000 new) and 1,000 deletions of existing ids."""
    rng = random.Random(seed)
    existing = [10_000_000 + rng.randrange(n_docs) for _ in range(10_000)]
    pmids = list(dict.fromkeys(existing)) + [90_000_000 + i for i in range(20_000)]
    deletes = "".join(f'<PMID Version="1">{10_000_000 + rng.randrange(n_docs)}</PMID>' for _ in range(1000))
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0"?>\n<PubmedArticleSet>\n')
        for pmid in pmids:
            words = " ".join(f"w{rng.randrange(5000)}" for _ in range(150))
            fh.write(f'<PubmedArticle><MedlineCitation><PMID Version="1">{pmid}</PMID><Article><ArticleTitle>t '
                     f'{pmid}</ArticleTitle><Abstract><AbstractText Label="RESULTS">{words}</AbstractText>'
                     "</Abstract></Article></MedlineCitation></PubmedArticle>\n")
        fh.write(f"<DeleteCitation>{deletes}</DeleteCitation>\n</PubmedArticleSet>\n")


SECTIONS = ("BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS")


def write_pubmed_xml(args: tuple[Path, int, int]) -> None:
    """One baseline-like file: articles ``first`` .. ``first + n - 1``, words of a 50k random vocabulary."""
    path, first, n = args
    rng = random.Random(first)
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 10))) for _ in range(50_000)]
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=5) as fh:
        fh.write('<?xml version="1.0"?>\n<PubmedArticleSet>\n')
        for pmid in range(first, first + n):
            sections = "".join(f'<AbstractText Label="{label}">{" ".join(rng.choices(vocab, k=rng.randint(20, 60)))}'
                               "</AbstractText>" for label in SECTIONS)
            fh.write(f'<PubmedArticle><MedlineCitation Status="MEDLINE"><PMID Version="1">{pmid}</PMID><Article>'
                     f'<ArticleTitle>{" ".join(rng.choices(vocab, k=10))}</ArticleTitle><Abstract>{sections}'
                     f"</Abstract>{_authors(rng, vocab)}</Article>{_mesh(rng, vocab)}</MedlineCitation>"
                     f"{_references(rng, vocab)}</PubmedArticle>\n")
        fh.write("</PubmedArticleSet>\n")


# What real articles carry besides the text (authors, MeSH, references: ~6.5 KB of XML an article with the abstract),
# so that the parser does the work a baseline file asks of it, not only the fields the store keeps.
def _authors(rng: random.Random, vocab: list[str]) -> str:
    return "<AuthorList>" + "".join(
        f"<Author><LastName>{rng.choice(vocab).title()}</LastName><ForeName>{rng.choice(vocab).title()}</ForeName>"
        f"<AffiliationInfo><Affiliation>{' '.join(rng.choices(vocab, k=8))}</Affiliation></AffiliationInfo></Author>"
        for _ in range(6)) + "</AuthorList>"


def _mesh(rng: random.Random, vocab: list[str]) -> str:
    return "<MeshHeadingList>" + "".join(
        f'<MeshHeading><DescriptorName UI="D{rng.randrange(10**6):06d}">{rng.choice(vocab)}</DescriptorName>'
        "</MeshHeading>" for _ in range(12)) + "</MeshHeadingList>"


def _references(rng: random.Random, vocab: list[str]) -> str:
    return "<PubmedData><ReferenceList>" + "".join(
        f"<Reference><Citation>{' '.join(rng.choices(vocab, k=12))}</Citation></Reference>"
        for _ in range(20)) + "</ReferenceList></PubmedData>"


def run_xml(n_docs: int, n_files: int, workers: list[int], workdir: Path) -> dict:
    from multiprocessing import Pool

    per_file = n_docs // n_files
    files = [workdir / f"pubmed_{k:04d}.xml.gz" for k in range(n_files)]
    with Pool(min(n_files, os.cpu_count() or 1)) as pool:
        pool.map(write_pubmed_xml, [(f, 10_000_000 + k * per_file, per_file) for k, f in enumerate(files)])
    builds = {}
    for w in workers:
        store = workdir / f"store_w{w}"
        build = timed([sys.executable, "-m", "ragroute.cli", "corpus", "build", "--input", *map(str, files),
                       "--out", str(store), "--workers", str(w)])
        builds[f"workers_{w}"] = {k: build[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")} | {
            "docs_per_s": round(per_file * n_files / build["wall_s"])}
        shutil.rmtree(store)
    return {"docs": per_file * n_files, "xml_files": n_files, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "input_gb": round(sum(f.stat().st_size for f in files) / 1e9, 3), "builds": builds}


def timed(cmd: list[str]) -> dict:
    """Run a command in its own process: wall and CPU seconds, its peak RSS, and what it printed last."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # ru_maxrss of children is the largest child so far: each step runs after smaller ones, or is reported by
    # the step itself (the read probe).
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(after.ru_maxrss / 1024),
            "stdout": proc.stdout}


def rss_mb() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "RssAnon", "RssFile")):
            key, value = line.split(":")
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def read_probe(store_dir: str) -> None:
    """Runs in its own process: RSS of open + 1000 random document() + position_of(), then iter_texts rate."""
    from ragroute.rag.store import CorpusStore

    rng = random.Random(2)
    after_import = rss_mb()
    store = CorpusStore.open(store_dir)
    positions = [rng.randrange(len(store)) for _ in range(1000)]
    start = time.perf_counter()
    docs = [store.document(p) for p in positions]
    document_us = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    found = [store.position_of(d.id) for d in docs]
    position_of_us = (time.perf_counter() - start) * 1e3
    live = store.live_mask()
    assert found == [p if live[p] else None for p in positions]
    after_reads = rss_mb()
    start, rows = time.perf_counter(), 0
    for _, ids, _ in store.iter_texts(batch_size=4096):
        rows += len(ids)
    iter_s = time.perf_counter() - start
    print(json.dumps({"rss_after_imports_mb": after_import, "rss_after_1000_reads_mb": after_reads,
                      "document_us_mean": round(document_us, 1), "position_of_us_mean": round(position_of_us, 1),
                      "iter_texts_rows_per_s": round(rows / iter_s),
                      "iter_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"


def run(n_docs: int, workdir: Path) -> dict:
    python = [sys.executable, "-m", "ragroute.cli", "corpus"]
    corpus, store, update = workdir / "corpus.jsonl", workdir / "store", workdir / "update.xml.gz"
    write_corpus(corpus, n_docs)
    write_update(update, n_docs)
    build = timed([*python, "build", "--input", str(corpus), "--out", str(store)])
    store_bytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    probe = timed([sys.executable, __file__, "--read-probe", str(store)])
    upd = timed([*python, "update", "--store", str(store), "--input", str(update)])
    summary = json.loads(upd["stdout"][upd["stdout"].index("{\n"):])
    return {
        "docs": n_docs, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
        "input_gb": round(corpus.stat().st_size / 1e9, 2), "store_gb": round(store_bytes / 1e9, 2),
        "build": {k: build[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")}
        | {"docs_per_s": round(n_docs / build["wall_s"]), "docs_per_cpu_s": round(n_docs / build["cpu_s"])},
        "read": json.loads(probe["stdout"].strip().splitlines()[-1]),
        "update": {k: upd[k] for k in ("wall_s", "cpu_s")} | {"history": summary["history"][-1]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--xml-files", type=int, help="measure the PubMed XML build instead, over this many files")
    parser.add_argument("--workers", default="1", help="with --xml-files: comma-separated `--workers` values")
    parser.add_argument("--read-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_probe:
        read_probe(args.read_probe)
        return
    workdir = Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    try:
        if args.xml_files:
            result = run_xml(args.docs, args.xml_files, [int(w) for w in args.workers.split(",")], workdir)
        else:
            result = run(args.docs, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
