"""``ragroute index build|update`` on real stores (PubMed XML written by the tests), real tantivy indexes and, in
the slow tests, real MiniLM embeddings and FAISS indexes; the pipeline then queries them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from index.config import IndexConfig
from index.corpus_build import build_store, update_store
from index.index_build import build_index, update_index
from ragroute.errors import UserError
from ragroute.rag.pipeline import PipelineConfig, RAGPipeline, load_pipeline_config
from ragroute.rag.retrieve import reciprocal_rank_fusion
from ragroute.rag.shards import temp_shard_path
from ragroute.rag.store import CorpusStore

REPO = Path(__file__).resolve().parents[2]
TOPICS = [
    ("Statins lower LDL cholesterol", "Atorvastatin reduced low-density lipoprotein cholesterol in adults."),
    ("Aspirin after myocardial infarction", "Low-dose aspirin prevented reinfarction after a heart attack."),
    ("Metformin in type 2 diabetes", "Metformin improved glycaemic control and HbA1c in diabetic patients."),
    ("Asthma and inhaled corticosteroids", "Inhaled budesonide reduced asthma exacerbations in children."),
    ("Malaria vaccine efficacy", "The RTS,S vaccine protected infants against Plasmodium falciparum malaria."),
    ("Smoking cessation with varenicline", "Varenicline doubled quit rates among heavy tobacco smokers."),
    ("Hip fracture surgery timing", "Early surgery lowered mortality in elderly patients with hip fractures."),
    ("Migraine prophylaxis", "Topiramate decreased monthly migraine days versus placebo."),
    ("Sepsis and early antibiotics", "Each hour of antibiotic delay raised sepsis mortality in emergency wards."),
    ("Vitamin D and bone density", "Cholecalciferol supplements did not change bone mineral density."),
]
SPARSE_ONLY = IndexConfig(dense=False)
BM25_PIPELINE = {"retriever": "bm25", "reranker": "none", "retrieval_n": 5, "final_n": 3}


def make_store(tmp_path: Path, xml_file: Callable, article: Callable, n: int = len(TOPICS)) -> Path:
    articles = [article(str(1000 + i), title, (None, text)) for i, (title, text) in enumerate(TOPICS[:n])]
    store = tmp_path / "store"
    build_store([str(xml_file(tmp_path / "base.xml", articles))], store)
    return store


def top_ids(pipeline: RAGPipeline, question: str) -> list[str]:
    return [d.id for d in pipeline.prepare(question).docs]


@pytest.mark.parametrize("parts", [1, 3])
def test_sparse_build_answers_by_store_position(tmp_path: Path, xml_file: Callable, article: Callable,
                                                parts: int) -> None:
    store = make_store(tmp_path, xml_file, article)
    manifest = build_index(store, tmp_path / "index", IndexConfig(dense=False, sparse_parts=parts))
    assert manifest["sparse"]["parts"] == parts
    assert manifest["state"] == "complete" and manifest["store_rows_indexed"] == len(TOPICS)
    assert manifest["store_fingerprint"] == CorpusStore.open(store).fingerprint
    pipeline = RAGPipeline.from_config(PipelineConfig(corpus=str(store), index=str(tmp_path / "index"), **BM25_PIPELINE))
    assert top_ids(pipeline, "Does varenicline help smokers quit tobacco?")[0] == "1005"
    assert top_ids(pipeline, "malaria vaccine in infants")[0] == "1004"
    # Query syntax of tantivy's parser is plain text here: it neither errors nor changes the match.
    assert top_ids(pipeline, 'malaria: "vaccine" AND (infants) OR -x*')[0] == "1004"
    assert pipeline.prepare("the of and").docs == []  # stop words only: nothing matches


@pytest.mark.parametrize("parts", [1, 3])
def test_update_never_returns_deleted_or_superseded_rows(tmp_path: Path, xml_file: Callable, article: Callable,
                                                         parts: int) -> None:
    store = make_store(tmp_path, xml_file, article)
    build_index(store, tmp_path / "index", IndexConfig(dense=False, sparse_parts=parts))
    update = xml_file(tmp_path / "update.xml", [
        article("1000", "Statins and muscle pain", (None, "Simvastatin caused myalgia in a minority of users.")),
        article("2000", "Zinc for the common cold", (None, "Zinc lozenges shortened rhinovirus colds.")),
    ], deleted=["1004"])
    manifest = update_index(store, tmp_path / "index", [str(update)])
    assert manifest["store_rows_indexed"] == len(TOPICS) + 2 and manifest["history"][-1]["dead"] == 2
    cfg = PipelineConfig(corpus=str(store), index=str(tmp_path / "index"), **BM25_PIPELINE)
    pipeline = RAGPipeline.from_config(cfg)
    assert top_ids(pipeline, "zinc lozenges for colds")[0] == "2000"
    for question in ("atorvastatin low-density lipoprotein cholesterol", "RTS,S malaria vaccine Plasmodium"):
        docs = pipeline.prepare(question).docs
        assert "1004" not in [d.id for d in docs]
        assert all("Atorvastatin" not in d.text for d in docs)  # the superseded text of 1000
    statin = pipeline.prepare("simvastatin myalgia statins").docs[0]
    assert statin.id == "1000" and "myalgia" in statin.text


def test_live_mask_filters_rows_the_index_still_holds(tmp_path: Path, xml_file: Callable, article: Callable) -> None:
    """Deleted rows are filtered at query time too: an index whose deletions were not applied (its tantivy
    files from before the update, the manifest brought to the new store) still returns no dead row."""
    store = make_store(tmp_path, xml_file, article)
    build_index(store, tmp_path / "index", SPARSE_ONLY)
    update_store(store, [str(xml_file(tmp_path / "u.xml", [], deleted=["1004"]))])
    manifest_path = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["store_fingerprint"] = CorpusStore.open(store).fingerprint
    manifest_path.write_text(json.dumps(manifest))
    pipeline = RAGPipeline.from_config(PipelineConfig(corpus=str(store), index=str(tmp_path / "index"), **BM25_PIPELINE))
    docs = pipeline.prepare("RTS,S malaria vaccine for infants and children with asthma").docs
    assert docs and "1004" not in [d.id for d in docs]


def test_an_index_of_another_store_version_is_refused(tmp_path: Path, xml_file: Callable, article: Callable) -> None:
    store = make_store(tmp_path, xml_file, article)
    built = build_index(store, tmp_path / "index", SPARSE_ONLY)["store_fingerprint"]
    update_store(store, [str(xml_file(tmp_path / "u.xml", [article("3000", "New", (None, "Novel text."))]))])
    now = CorpusStore.open(store).fingerprint
    cfg = PipelineConfig(corpus=str(store), index=str(tmp_path / "index"), **BM25_PIPELINE)
    with pytest.raises(UserError, match=f"{built}.*{now}.*ragroute index update"):
        RAGPipeline.from_config(cfg)
    with pytest.raises(UserError, match="ragroute index update"):
        build_index(store, tmp_path / "index", SPARSE_ONLY)  # a build does not silently rebuild over it
    update_index(store, tmp_path / "index", [])  # brings the index up to the store without new input
    assert top_ids(RAGPipeline.from_config(cfg), "novel text")[0] == "3000"
    (tmp_path / "other").mkdir()
    other = make_store(tmp_path / "other", xml_file, article, n=3)
    with pytest.raises(UserError, match="another store"):
        update_index(other, tmp_path / "index", [])


DIE_AT_THIRD_BATCH = """
import os, signal, sys
from index.config import IndexConfig
from index.index_build import build_index
from ragroute.rag.store import CorpusStore

read = CorpusStore.iter_texts

def dying(self, start=0, stop=None, batch_size=4096):
    for i, batch in enumerate(read(self, start, stop, batch_size=2)):
        if i == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # rows 4-5 are added but not committed
        yield batch

CorpusStore.iter_texts = dying
build_index(sys.argv[1], sys.argv[2], IndexConfig(dense=False, sparse_commit_every=4, sparse_parts=int(sys.argv[3])))
"""


@pytest.mark.parametrize(("parts", "resume_at"), [(1, [4]), (2, [3, 4])])
def test_killed_sparse_build_resumes_from_its_last_commit(tmp_path: Path, xml_file: Callable, article: Callable,
                                                          parts: int, resume_at: list[int]) -> None:
    from index.sparse_build import resume_points
    from ragroute.rag.sparse import AnalyzerSettings, TantivyBM25

    store = make_store(tmp_path, xml_file, article)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", DIE_AT_THIRD_BATCH, str(store), str(tmp_path / "resumed"),
                             str(parts)], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    sparse = tmp_path / "resumed" / "sparse"
    # The last commit held rows 0-3, not the rows added after. With two parts, part 0 holds rows 0 and 2, part 1
    # rows 1 and 3: the resumed build reads from row 3 on and must not add row 3 to part 1 twice.
    assert resume_points(sparse, AnalyzerSettings(), parts) == resume_at
    assert json.loads((tmp_path / "resumed" / "manifest.json").read_text())["state"] == "building"
    cfg = IndexConfig(dense=False, sparse_parts=parts)
    assert build_index(store, tmp_path / "resumed", cfg)["state"] == "complete"
    build_index(store, tmp_path / "straight", cfg)
    resumed, straight = (TantivyBM25(tmp_path / d / "sparse", AnalyzerSettings(), parts=parts)
                         for d in ("resumed", "straight"))
    assert resumed.n_docs == straight.n_docs == len(TOPICS)  # no row twice
    for question in ("early surgery for hip fractures", "vitamin D bone density", "sepsis antibiotics mortality"):
        (a_pos, a_scores), (b_pos, b_scores) = resumed.search_one(question, 5), straight.search_one(question, 5)
        assert a_pos.tolist() == b_pos.tolist()
        np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6)


def test_split_sparse_index_deals_rows_to_parts_and_merges_their_top_k_by_score(
    tmp_path: Path, xml_file: Callable, article: Callable
) -> None:
    import tantivy

    from ragroute.rag.sparse import POS_FIELD, AnalyzerSettings, TantivyBM25

    store = make_store(tmp_path, xml_file, article)
    build_index(store, tmp_path / "index", IndexConfig(dense=False, sparse_parts=3))
    index = TantivyBM25(tmp_path / "index" / "sparse", AnalyzerSettings(), parts=3)
    assert index.n_docs == len(TOPICS)
    for part, searcher in enumerate(index.searchers):
        hits = searcher.search(tantivy.Query.all_query(), limit=100).hits
        assert sorted(searcher.fast_field_values(POS_FIELD, [a for _, a in hits])) == list(range(part, len(TOPICS), 3))
    for question in ("patients mortality reduced in elderly", "cholesterol vaccine asthma children", "aspirin"):
        positions, scores = index.search_one(question, 4)
        one_by_one = [index._top_live(s, index.query(question), 4) for s in index.searchers]  # noqa: SLF001
        expected = sorted(((float(sc), int(p)) for pos, scs in one_by_one for p, sc in zip(pos, scs, strict=True)),
                          key=lambda pair: (-pair[0], pair[1]))[:4]
        assert list(zip(scores.tolist(), positions.tolist(), strict=True)) == expected
        assert len(set(positions.tolist())) == len(positions) and np.all(np.diff(scores) <= 0)
    assert index._pool is not None  # noqa: SLF001  (the other parts were searched in its threads)


@pytest.mark.parametrize("parts", [1, 3])
def test_candidate_scores_are_the_full_search_scores_of_just_those_documents(
    tmp_path: Path, xml_file: Callable, article: Callable, parts: int
) -> None:
    from ragroute.rag.sparse import AnalyzerSettings, TantivyBM25

    store = make_store(tmp_path, xml_file, article)
    build_index(store, tmp_path / "index", IndexConfig(dense=False, sparse_parts=parts))
    index = TantivyBM25(tmp_path / "index" / "sparse", AnalyzerSettings(), parts=parts)
    for question in ("patients mortality reduced in elderly", "aspirin heart attack", "the of and"):
        full = dict(zip(*(a.tolist() for a in index.search_one(question, len(TOPICS))), strict=True))
        candidates = np.asarray([7, 1, 0, 4, 9, 6], np.int64)  # any order, across every part
        scores = index.candidate_scores(question, candidates)
        assert scores.tolist() == pytest.approx([full.get(int(p), 0.0) for p in candidates], rel=1e-6)
        assert (scores > 0).sum() == sum(int(p) in full for p in candidates)  # a document without the terms: 0
    assert index.candidate_scores("aspirin", np.empty(0, np.int64)).shape == (0,)


def test_an_index_from_before_parts_opens_and_other_parts_are_refused(
    tmp_path: Path, xml_file: Callable, article: Callable
) -> None:
    store = make_store(tmp_path, xml_file, article)
    build_index(store, tmp_path / "index", SPARSE_ONLY)
    manifest_path = tmp_path / "index" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["sparse"]["parts"]  # as written before the parts existed
    manifest_path.write_text(json.dumps(manifest))
    assert build_index(store, tmp_path / "index", SPARSE_ONLY)["state"] == "complete"  # the same build: up to date
    pipeline = RAGPipeline.from_config(PipelineConfig(corpus=str(store), index=str(tmp_path / "index"), **BM25_PIPELINE))
    assert top_ids(pipeline, "malaria vaccine in infants")[0] == "1004"
    with pytest.raises(UserError, match="built differently.*parts"):
        build_index(store, tmp_path / "index", IndexConfig(dense=False, sparse_parts=2))


def test_large_corpus_without_index_is_refused(tmp_path: Path, xml_file: Callable, article: Callable) -> None:
    store = make_store(tmp_path, xml_file, article)
    cfg = PipelineConfig(corpus=str(store), index_dir=str(tmp_path / "cache"), implicit_index_max_docs=5,
                         **BM25_PIPELINE)
    with pytest.raises(UserError, match="ragroute index build"):
        RAGPipeline.from_config(cfg)
    build_index(store, tmp_path / "index", SPARSE_ONLY)
    from ragroute.rag.corpus import DEMO_CORPUS

    with pytest.raises(UserError, match="not a corpus store"):  # an index needs the store it was built from
        RAGPipeline.from_config(PipelineConfig(corpus=str(DEMO_CORPUS), index=str(tmp_path / "index"), **BM25_PIPELINE))


def test_cli_build_prints_the_manifest_and_bad_store_exits_2(tmp_path: Path, xml_file: Callable, article: Callable) -> None:
    store = make_store(tmp_path, xml_file, article)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "ragroute.cli", "index", "build", "--store", str(store), "--out",
                          str(tmp_path / "index"), "--dense", "false"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert '"store_rows_indexed": 10' in run.stdout
    bad = subprocess.run([sys.executable, "-m", "ragroute.cli", "index", "build", "--store", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "i2")], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "not a corpus store" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------ dense (real MiniLM)

DENSE_ARGS = ["--rows-per-shard", "4", "--dense-batch-size", "4", "--device", "cpu", "--factory", "IVF4,Flat",
              "--train-size", "40", "--nprobe", "2"]


def cli_build(store: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ragroute.cli", "index", "build", "--store", str(store), "--out",
                             str(out), *DENSE_ARGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_index_and_the_pipeline_uses_it(
    tmp_path: Path, xml_file: Callable, article: Callable
) -> None:
    import faiss

    store = make_store(tmp_path, xml_file, article)
    emb = tmp_path / "resumed" / "embeddings"
    emb.mkdir(parents=True)
    killed = cli_build(store, tmp_path / "resumed")
    # Shard 1's temporary file is a FIFO with no reader: the build blocks writing it, so the kill always lands
    # after shard 0 and before shard 1 is written, however fast the machine.
    os.mkfifo(temp_shard_path(emb, 1, killed.pid))
    wait_for(emb / "shard_000000.done", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (emb / "shard_000001.done").exists() and not (emb / "shard_000002.done").exists()
    assert json.loads((tmp_path / "resumed" / "manifest.json").read_text())["state"] == "building"
    first_shard = (emb / "shard_000000.npy").stat().st_mtime_ns
    for out in ("resumed", "straight"):
        proc = cli_build(store, tmp_path / out)
        assert proc.wait(timeout=600) == 0, proc.stdout.read().decode()[-3000:]
    assert (emb / "shard_000000.npy").stat().st_mtime_ns == first_shard  # a done shard is never recomputed
    for k in range(3):
        np.testing.assert_array_equal(np.load(emb / f"shard_{k:06d}.npy"),
                                      np.load(tmp_path / "straight" / "embeddings" / f"shard_{k:06d}.npy"))
    a, b = (faiss.serialize_index(faiss.read_index(str(tmp_path / d / "dense.faiss"))) for d in ("resumed", "straight"))
    np.testing.assert_array_equal(a, b)

    cfg = PipelineConfig(corpus=str(store), index=str(tmp_path / "resumed"), retriever="hybrid", reranker="bi-encoder",
                         retrieval_n=5, final_n=3, refine_k=6)
    pipeline = RAGPipeline.from_config(cfg)
    assert top_ids(pipeline, "Does topiramate prevent migraine headaches?")[0] == "1007"
    dense_only = RAGPipeline.from_config(PipelineConfig(**{**vars(cfg), "retriever": "dense"}))
    assert top_ids(dense_only, "heart attack and aspirin")[0] == "1001"
    shipped = {  # the shipped configs as they are, on this tiny index
        name: RAGPipeline.from_config(load_pipeline_config(
            str(REPO / "configs" / "pipeline" / f"{name}.yaml"),
            [f"corpus={store}", f"index={tmp_path / 'resumed'}", "retrieval_n=5", "final_n=3", "refine_k=6"]))
        for name in ("pubmed", "pubmed-dense", "pubmed-rrf", "pubmed-dense-bm25")
    }
    for name, pipeline in shipped.items():
        assert top_ids(pipeline, "Does topiramate prevent migraine headaches?")[0] == "1007", name
    # pubmed-rrf's final order is the fusion of the BM25 and dense rankings, not a re-scoring by the bi-encoder.
    rrf = shipped["pubmed-rrf"]
    question = "aspirin against heart attacks in diabetic patients"
    rankings = [part.retrieve([question], 5)[0] for part in rrf.retriever.parts]
    fused = reciprocal_rank_fusion(rankings, rrf.retriever.weights, rrf.retriever.rrf_k)[:3]
    got = rrf.prepare(question).docs
    assert [d.id for d in got] == [d.id for d in rrf.corpus.documents([h.doc for h in fused])]
    assert [d.score for d in got] == pytest.approx([h.score for h in fused])
    # pubmed-dense-bm25 keeps the dense candidates and fuses their dense order with their BM25 order.
    fast = shipped["pubmed-dense-bm25"]
    question = "mortality of smokers"  # one where BM25's vote changes the dense top 3
    dense_hits = fast.retriever.retrieve([question], 5)[0]
    full = dict(zip(*(a.tolist() for a in fast.store.bm25().search_one(question, 100)), strict=True))
    by_bm25 = sorted((h for h in dense_hits if h.doc in full), key=lambda h: -full[h.doc])
    fused = reciprocal_rank_fusion([dense_hits, by_bm25], [1.0, 1.0], fast.cfg.rrf_k)[:3]
    assert [h.doc for h in fused] != [h.doc for h in dense_hits[:3]]
    assert [d.id for d in fast.prepare(question).docs] == [d.id for d in fast.corpus.documents([h.doc for h in fused])]
    with pytest.raises(UserError, match="all-MiniLM-L6-v2 \\(bundled\\).*other/encoder"):
        RAGPipeline.from_config(PipelineConfig(**{**vars(cfg), "dense_model": "other/encoder"}))

    # An update extends the last, partial shard (its old rows kept as they were) and adds the new rows to FAISS.
    last_before = np.load(emb / "shard_000002.npy")
    assert len(last_before) == 2
    update = xml_file(tmp_path / "update.xml", [
        article("1001", "Aspirin and bleeding", (None, "Aspirin raised gastrointestinal bleeding in the elderly.")),
        article("2000", "Zinc for the common cold", (None, "Zinc lozenges shortened rhinovirus colds.")),
    ])
    update_index(store, tmp_path / "resumed", [str(update)])
    last_after = np.load(emb / "shard_000002.npy")
    assert len(last_after) == 4 and np.array_equal(last_after[:2], last_before)
    assert (emb / "shard_000000.npy").stat().st_mtime_ns == first_shard
    pipeline = RAGPipeline.from_config(PipelineConfig(**{**vars(cfg), "retriever": "dense"}))
    assert top_ids(pipeline, "zinc lozenges against colds")[0] == "2000"
    docs = pipeline.prepare("aspirin after a heart attack").docs
    assert [d.id for d in docs].count("1001") == 1 and all("reinfarction" not in d.text for d in docs)
