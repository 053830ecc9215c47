"""Fault-test helpers shared by the data_gen tests: wait on a records file, kill a run mid-way, rerun it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ragroute.records import iter_jsonl, read_records

REPO = Path(__file__).resolve().parents[2]


def _wait_for_records(path: Path, n: int, still_running: Callable[[], bool], timeout: float = 400) -> None:
    """Return once ``path`` holds ``n`` records; fail if the run ends (or ``timeout`` passes) before that."""
    deadline = time.time() + timeout
    while time.time() < deadline and still_running():
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {n} records while the run was going")


@pytest.fixture
def wait_for_records() -> Callable[..., None]:
    return _wait_for_records


@pytest.fixture
def kill_midway_then_rerun() -> Callable[[list[str], Path, int, int], None]:
    """Start the data-gen command ``cmd``, SIGKILL its whole process group once ``at_least`` records exist, then
    check that the records written survive intact and that the same command completes the ``total``."""

    def run(cmd: list[str], out: Path, at_least: int, total: int) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        records = out / "records.jsonl"
        try:
            _wait_for_records(records, at_least, lambda: proc.poll() is None)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: engine processes die too
            proc.wait()
        kept = [r["id"] for r in iter_jsonl(records)]
        assert at_least <= len(kept) < total
        before = records.read_bytes()
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert records.read_bytes().startswith(before)  # nothing already written is rewritten or lost
        ids = [r.id for r in read_records(out)]
        assert len(ids) == len(set(ids)) == total
        assert f"{len(kept)} already done" in done.stdout

    return run
