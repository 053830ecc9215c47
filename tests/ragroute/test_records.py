import json

from ragroute.records import AnswerRecord, JsonlWriter, finished_ids, iter_jsonl, read_records


def rec(i: int) -> AnswerRecord:
    return AnswerRecord(id=f"q{i}", question=f"question {i}?", answer=f"answer {i} [0]", model="m", doc_ids=["d1"])


def test_round_trip_and_datasets_loadable(tmp_path):
    path = tmp_path / "records.jsonl"
    with JsonlWriter(path) as writer:
        for i in range(3):
            writer.write(rec(i))
    assert [r.id for r in read_records(tmp_path)] == ["q0", "q1", "q2"]
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == 3 and ds[1]["answer"] == "answer 1 [0]"


def test_torn_last_line_is_skipped_then_cut_before_append(tmp_path):
    path = tmp_path / "records.jsonl"
    with JsonlWriter(path) as writer:
        writer.write(rec(0))
        writer.write(rec(1))
    with path.open("a") as fh:
        fh.write(rec(2).to_json()[:25])  # a crash mid-write
    assert finished_ids(path) == {"q0", "q1"}
    with JsonlWriter(path) as writer:
        writer.write(rec(3))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["q0", "q1", "q3"]
    assert len(list(iter_jsonl(path))) == 3


def test_unknown_keys_from_newer_writers_are_ignored():
    data = json.loads(rec(5).to_json())
    data["future_field"] = 1
    assert AnswerRecord.from_dict(data).id == "q5"


def test_finished_ids_of_missing_file_is_empty(tmp_path):
    assert finished_ids(tmp_path / "none.jsonl") == set()


def test_write_many_appends_a_batch_with_one_fsync(tmp_path, monkeypatch):
    import os

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = tmp_path / "records.jsonl"
    with JsonlWriter(path) as writer:
        writer.write_many([rec(0), rec(1), {"id": "q2", "question": "?"}])
        writer.write_many([])
        writer.write(rec(3))
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["q0", "q1", "q2", "q3"]
    assert len(synced) == 2  # one per batch, none for an empty one


def _two_records(path):
    with JsonlWriter(path) as writer:
        writer.write_many([rec(0), rec(1)])
    return path.read_bytes()


def test_tail_torn_inside_a_multibyte_character_is_cut_byte_safely(tmp_path, caplog):
    import logging

    path = tmp_path / "records.jsonl"
    good = _two_records(path)
    torn = json.dumps({"id": "q2", "answer": "β-blockers é"}, ensure_ascii=False).encode()
    torn = torn[: torn.index("é".encode()) + 1]  # the first byte of the 2-byte é: not valid UTF-8
    path.write_bytes(good + torn)
    assert finished_ids(path) == {"q0", "q1"}  # the reader skips it
    with caplog.at_level(logging.WARNING, logger="ragroute.records"):
        with JsonlWriter(path) as writer:
            writer.write(rec(3))
    assert path.read_bytes() == good + (rec(3).to_json() + "\n").encode()
    assert f"torn tail of {len(torn)} bytes" in caplog.text


def test_half_line_followed_by_a_newline_at_the_end_is_cut(tmp_path):
    path = tmp_path / "records.jsonl"
    good = _two_records(path)
    half = rec(2).to_json().encode()[:30] + b"\n"
    path.write_bytes(good + half)
    assert [d["id"] for d in iter_jsonl(path)] == ["q0", "q1"]
    with JsonlWriter(path):
        pass
    assert path.read_bytes() == good


def test_corrupt_line_in_the_middle_names_file_line_and_remedy(tmp_path):
    import pytest

    from ragroute.errors import UserError

    path = tmp_path / "records.jsonl"
    good = _two_records(path)
    path.write_bytes(good + b'{"id": "q2", "answer": "cut\n' + (rec(3).to_json() + "\n").encode())
    with pytest.raises(UserError) as info:
        finished_ids(path)
    message = str(info.value)
    assert str(path) in message and "line 3 is not valid JSON" in message
    assert f"sed -i '3d' {path}" in message and "--overwrite" in message
    with pytest.raises(UserError, match="line 3"):
        JsonlWriter(path).close()  # the writer leaves a middle line alone: only a tail is torn by a crash
        finished_ids(path)
    assert path.read_bytes().startswith(good + b'{"id": "q2"')
