"""``ragroute corpus build|update`` on real files: PubMed update semantics, a killed build, bad input."""

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

from index.corpus_build import build_store, update_store
from ragroute.cli import main as ragroute_main
from ragroute.errors import UserError
from ragroute.rag.corpus import Document
from ragroute.rag.store import CorpusStore, is_store

REPO = Path(__file__).resolve().parents[2]


def kill_once_written(proc: subprocess.Popen, marker: Path) -> None:
    """SIGKILL the process once it has written ``marker`` (it then blocks on a named pipe nobody writes)."""
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_pubmed_update_adds_replaces_and_deletes(tmp_path: Path, article: Callable, xml_file: Callable) -> None:
    base = xml_file(tmp_path / "pubmed25n0001.xml.gz", [
        article("1", "One", (None, "first")), article("2", "Two", (None, "old two")),
        article("3", "Three", (None, "three"))])
    build_store([str(base)], tmp_path / "store")
    before = CorpusStore.open(tmp_path / "store")
    update = xml_file(tmp_path / "pubmed25n1275.xml.gz", [
        article("2", "Two", (None, "new two")), article("4", "Four", (None, "four"))],
        deleted=["1", "99"])
    result = update_store(tmp_path / "store", [str(update)])
    store = CorpusStore.open(tmp_path / "store")
    assert (result.first_new_pos, result.n_new, result.dead_positions.tolist()) == (3, 2, [0, 1])
    assert len(store) == 5 and store.live_mask().tolist() == [False, False, True, True, True]
    assert [store.position_of(i) for i in ("1", "2", "3", "4", "99")] == [None, 3, 2, 4, None]
    assert store.document(3) == Document("2", "Two", "new two")
    assert store.document(1).text == "old two"  # positions never move: old rows stay readable, only dead
    history = store.manifest["history"]
    assert [h["action"] for h in history] == ["build", "update"]
    assert (history[1]["added"], history[1]["replaced"], history[1]["deleted"], history[1]["deletes_unknown"]) == (
        2, 1, 1, 1)
    assert store.fingerprint != before.fingerprint and history[1]["fingerprint"] == store.fingerprint
    assert store.manifest["live"] == 3 and len(store.manifest["sources"]) == 2


def test_a_later_build_file_replaces_and_deletes_earlier_ones(tmp_path: Path, article: Callable, xml_file: Callable) -> None:
    first = xml_file(tmp_path / "a.xml", [article("1", "A", (None, "a1")), article("2", "B", (None, "b"))])
    second = xml_file(tmp_path / "b.xml", [article("1", "A", (None, "a2"))], deleted=["2"])
    manifest = build_store([str(first), str(second)], tmp_path / "s")
    store = CorpusStore.open(tmp_path / "s")
    assert store.live_mask().tolist() == [False, False, True] and manifest["live"] == 1
    assert store.position_of("1") == 2 and store.position_of("2") is None


def test_deletions_only_update_and_empty_update(tmp_path: Path, article: Callable, xml_file: Callable) -> None:
    base = xml_file(tmp_path / "a.xml", [article("1", "A", (None, "a")), article("2", "B", (None, "b"))])
    build_store([str(base)], tmp_path / "s")
    deletes = xml_file(tmp_path / "d.xml", [], deleted=["2"])
    result = update_store(tmp_path / "s", [str(deletes)])
    assert (result.n_new, result.dead_positions.tolist()) == (0, [1])
    assert CorpusStore.open(tmp_path / "s").position_of("2") is None
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{bad\n")
    with pytest.raises(UserError, match="no usable documents or deletions"):
        update_store(tmp_path / "s", [str(empty)])
    assert CorpusStore.open(tmp_path / "s").manifest["history"][-1]["action"] == "update"
    assert len(CorpusStore.open(tmp_path / "s").manifest["history"]) == 2


def test_bad_records_are_counted_with_locations_and_not_fatal(tmp_path: Path, article: Callable, xml_file: Callable) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "text": "x"}\nnot json\n')
    cut = xml_file(tmp_path / "cut.xml.gz", [article(str(i), "T", (None, "words " * 50)) for i in range(300)])
    cut.write_bytes(cut.read_bytes()[:-200])
    manifest = build_store([str(good), str(cut)], tmp_path / "s")
    problems = manifest["problems"]
    assert problems["counts"]["malformed JSON"] == 1
    assert problems["examples"]["malformed JSON"] == [f"{good}:line 2"]
    assert sum(problems["counts"].get(k, 0) for k in ("truncated file", "corrupt XML")) == 1
    assert 1 < manifest["rows"] < 301
    sources = manifest["sources"]
    assert [s["problems"] for s in sources] == [1, 1] and sources[1]["rows"] == manifest["rows"] - 1


def test_cli_empty_build_exits_2_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n{oops\n')
    out = tmp_path / "store"
    assert ragroute_main(["corpus", "build", "--input", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no usable documents" in err and "empty text" in err and f"{bad}:line 1" in err
    assert not out.exists() and not (tmp_path / "store.partial").exists()
    assert ragroute_main(["corpus", "build", "--input", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "input file not found" in capsys.readouterr().err
    assert ragroute_main(["corpus", "build", "--input", str(tmp_path), "--out", str(out)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert ragroute_main(["corpus", "update", "--store", str(tmp_path), "--input", str(bad)]) == 2
    assert "not a corpus store" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text('{"id": "a", "text": "x"}\n')
    assert ragroute_main(["corpus", "build", "--input", str(src), "--out", str(tmp_path / "s")]) == 0
    assert "\"rows\": 1," in capsys.readouterr().out
    assert ragroute_main(["corpus", "build", "--input", str(src), "--out", str(tmp_path / "s")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert ragroute_main(["corpus", "info", str(tmp_path / "s")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["rows"], info["live"], info["segments"]) == (1, 1, 1)


def test_killed_build_never_opens_and_resumes_from_its_done_files(tmp_path: Path) -> None:
    """The build is SIGKILLed while it waits on its second input (a named pipe nobody writes yet): no store at
    --out, the first file's segment kept; the rerun skips it and ends with the same store as a clean build."""
    first = tmp_path / "a.jsonl"
    first.write_text("".join(json.dumps({"id": str(i), "text": f"doc {i}"}) + "\n" for i in range(100)))
    second = tmp_path / "b.jsonl"
    os.mkfifo(second)
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ragroute.cli", "corpus", "build", "--input", str(first), str(second), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marker = tmp_path / "store.partial" / "segments" / "000000.json"
    kill_once_written(proc, marker)
    assert not out.exists() and not is_store(tmp_path / "store.partial")
    second.unlink()
    second.write_text('{"id": "100", "text": "doc 100"}\n')
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "already written (100 documents), kept" in rerun.stdout
    clean = build_store([str(first), str(second)], tmp_path / "clean")
    store = CorpusStore.open(out)
    assert store.fingerprint == clean["fingerprint"] and len(store) == 101
    assert np.array_equal(store.live_mask(), np.ones(101, bool)) and not (tmp_path / "store.partial").exists()


def test_killed_update_leaves_the_previous_store_and_the_next_update_cleans_up(tmp_path: Path) -> None:
    base = tmp_path / "a.jsonl"
    base.write_text("".join(json.dumps({"id": str(i), "text": f"doc {i}"}) + "\n" for i in range(10)))
    build_store([str(base)], tmp_path / "s")
    before = CorpusStore.open(tmp_path / "s").manifest
    new = tmp_path / "new.jsonl"
    new.write_text('{"id": "3", "text": "doc 3 v2"}\n')
    pipe = tmp_path / "later.jsonl"
    os.mkfifo(pipe)
    code = ("from index.corpus_build import update_store; "
            f"update_store({str(tmp_path / 's')!r}, [{str(new)!r}, {str(pipe)!r}])")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    marker = tmp_path / "s" / "segments" / "u000001-000000.json"
    kill_once_written(proc, marker)
    store = CorpusStore.open(tmp_path / "s")
    assert store.manifest == before and store.position_of("3") == 3 and len(store) == 10
    result = update_store(tmp_path / "s", [str(new)])
    assert (result.first_new_pos, result.n_new, result.dead_positions.tolist()) == (10, 1, [3])
    store = CorpusStore.open(tmp_path / "s")
    assert store.document(store.position_of("3")).text == "doc 3 v2"
    files = sorted(p.name for p in (tmp_path / "s" / "segments").iterdir())
    assert files == ["000000.arrow", "000000.idhash.npy", "000000.json",
                     "u000001-000000.arrow", "u000001-000000.idhash.npy", "u000001-000000.json"]


def test_a_second_concurrent_update_is_refused(tmp_path: Path) -> None:
    import fcntl

    src = tmp_path / "a.jsonl"
    src.write_text('{"id": "a", "text": "x"}\n')
    build_store([str(src)], tmp_path / "s")
    with (tmp_path / "s" / "update.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another update"):
            update_store(tmp_path / "s", [str(src)])
    assert update_store(tmp_path / "s", [str(src)]).dead_positions.tolist() == [0]


def test_parallel_workers_build_the_same_store(tmp_path: Path, article: Callable, xml_file: Callable) -> None:
    files = [str(xml_file(tmp_path / f"pubmed{i}.xml.gz", [article(str(j), f"T{j}", (None, f"text {j}"))
                                                          for j in range(i * 10, i * 10 + 15)],
                          deleted=[str(i * 10 - 1)] if i else []))
             for i in range(4)]
    one = build_store(files, tmp_path / "one")
    two = build_store(files, tmp_path / "two", workers=2)
    assert two["fingerprint"] == one["fingerprint"] and two["live"] == one["live"] == 45 - 3  # ids 0..44, three deleted
    assert CorpusStore.open(tmp_path / "two").documents(range(60)) == CorpusStore.open(tmp_path / "one").documents(
        range(60))
