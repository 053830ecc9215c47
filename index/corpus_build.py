"""``build_store`` and ``update_store``: input files streamed into a corpus store, with progress and no torn store.

A build writes into ``OUT.partial/`` and renames it to ``OUT`` only when the manifest is complete, so a killed
build never leaves a directory that opens as a store. Run again with the same inputs, it keeps the input files
already written (each one's segment has a done marker) and continues with the next. An update appends one
segment per new file and commits with a new manifest (see :mod:`index.corpus_write`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.corpus_write import SegmentResult, commit_generation, source_info, write_json_atomic, write_segment
from index.sources import ProblemLog, check_inputs
from ragroute.errors import UserError
from ragroute.rag.store import is_store, read_manifest

logger = logging.getLogger("ragroute.corpus")


class Progress:
    """Logs documents written, docs/s and an ETA (from the input bytes of the files finished so far) every
    ``every_s`` seconds and once at the end."""

    def __init__(self, what: str, paths: list[Path], every_s: float = 10.0) -> None:
        self.what, self.n_files, self.every_s = what, len(paths), every_s
        self.bytes_left = sum(p.stat().st_size for p in paths)
        self.bytes_done, self.docs, self.file = 0, 0, 0
        self.start = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.docs += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.log()

    def file_done(self, path: Path, written: bool) -> None:
        """A file finished (``written``) or kept from an earlier build (its time is not this run's)."""
        size = path.stat().st_size
        self.bytes_left -= size
        self.bytes_done += size if written else 0

    def rate(self) -> float:
        return self.docs / max(time.monotonic() - self.start, 1e-9)

    def eta(self) -> str:
        if not self.bytes_done:
            return "?"
        seconds = (time.monotonic() - self.start) * max(self.bytes_left, 0) / self.bytes_done
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def log(self) -> None:
        logger.info("%s: %s documents, %.0f docs/s, file %d/%d, ETA %s", self.what, f"{self.docs:,}", self.rate(),
                    self.file, self.n_files, self.eta())


def _resumable_segment(work: Path, name: str, path: Path) -> SegmentResult | None:
    """The done segment of this input from an earlier, killed build (None if not done or the file changed)."""
    marker = work / "segments" / f"{name}.json"
    if not marker.is_file():
        return None
    done = json.loads(marker.read_text(encoding="utf-8"))
    if done["source"] != source_info(path):
        return None
    return SegmentResult(**done)


def _start_work_dir(work: Path, paths: list[Path]) -> None:
    plan = {"inputs": [str(p.resolve()) for p in paths]}
    plan_file = work / "build.json"
    if plan_file.is_file() and json.loads(plan_file.read_text(encoding="utf-8")) != plan:
        logger.info("corpus build: %s holds a build of other inputs; starting over", work)
        shutil.rmtree(work)
    (work / "segments").mkdir(parents=True, exist_ok=True)
    if not plan_file.is_file():
        write_json_atomic(plan_file, plan)


def _log_segment(done: SegmentResult, path: Path, kept: bool) -> None:
    if kept:
        logger.info("corpus: %s already written (%d documents), kept", path, done.rows)
    if done.problems.get("total"):
        logger.warning("corpus: %s: %d problems: %s", path, done.problems["total"],
                       "; ".join(f"{n} {k}" for k, n in done.problems["counts"].items()))


def _write_segments(work: Path, paths: list[Path], names: list[str], progress: Progress,
                    workers: int = 1) -> list[SegmentResult]:
    """One segment per input file, in input order; files already done (a killed build's) are kept. With
    ``workers`` > 1, files are written by that many processes at once (same segments, same store)."""
    segments: list[SegmentResult | None] = [_resumable_segment(work, n, p) for n, p in zip(names, paths, strict=True)]
    todo = [i for i, done in enumerate(segments) if done is None]
    for i, done in enumerate(segments):
        if done is not None:
            _log_segment(done, paths[i], kept=True)
            progress.file_done(paths[i], written=False)
    if workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(write_segment, work, names[i], paths[i]): i for i in todo}
            for future in as_completed(futures):
                i = futures[future]
                segments[i] = future.result()
                progress.file += 1
                progress.file_done(paths[i], written=True)
                progress(segments[i].rows)
                _log_segment(segments[i], paths[i], kept=False)
    else:
        for i in todo:
            progress.file = i + 1
            segments[i] = write_segment(work, names[i], paths[i], progress)
            progress.file_done(paths[i], written=True)
            _log_segment(segments[i], paths[i], kept=False)
    return segments  # type: ignore[return-value]


def _report_problems(manifest: dict[str, Any]) -> None:
    problems = ProblemLog()
    problems.merge(manifest["problems"])
    if problems.total:
        logger.warning("corpus: %d input records not stored: %s", problems.total, problems.summary())


def build_store(inputs: list[str], out_dir: str | Path, workers: int = 1) -> dict[str, Any]:
    """Stream ``inputs`` (JSONL, PubMedQA JSON, Parquet, Arrow, PubMed XML[.gz]) into a new store at ``out_dir``
    (``workers`` processes writing files at once); returns its manifest. Later files win for a repeated id;
    DeleteCitation ids are marked dead."""
    paths = check_inputs(inputs)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or is_store(out) or any(out.iterdir())):
        raise UserError(f"{out} already exists; add files to a store with `ragroute index update` "
                        "or choose a new --out")
    work = out.with_name(out.name + ".partial")
    _start_work_dir(work, paths)
    progress = Progress("corpus build", paths)
    segments = _write_segments(work, paths, [f"{i:06d}" for i in range(len(paths))], progress, workers)
    progress.log()
    if not any(seg.rows for seg in segments):
        shutil.rmtree(work)
        problems = ProblemLog()
        for seg in segments:
            problems.merge(seg.problems)
        raise UserError(f"no usable documents in {len(paths)} input file(s)"
                        + (f": {problems.summary()}" if problems.total else ""))
    manifest, _ = commit_generation(work, None, segments, "build")
    (work / "build.json").unlink()
    if out.exists():
        out.rmdir()  # an empty directory the user made for it
    work.rename(out)
    logger.info("corpus build: %s documents (%s live) in %s, fingerprint %s", f"{manifest['rows']:,}",
                f"{manifest['live']:,}", out, manifest["fingerprint"])
    _report_problems(manifest)
    return manifest


@dataclass
class UpdateResult:
    first_new_pos: int  # rows [first_new_pos, first_new_pos + n_new) are new
    n_new: int
    dead_positions: np.ndarray  # rows this update marked dead (superseded or deleted), sorted
    manifest: dict[str, Any]


def _remove_uncommitted(store: Path, manifest: dict[str, Any]) -> None:
    """Files a killed update wrote but never committed (the manifest does not name them)."""
    named = {s["file"] for s in manifest["segments"]} | {manifest["dead"]}
    named |= {lk[k] for lk in manifest["lookups"] for k in ("hash", "pos")}
    for sub in ("segments", "lookup"):
        for path in (store / sub).glob("*"):
            stem = f"{sub}/{path.name.split('.')[0]}"
            if not any(n.startswith(stem) for n in named):
                path.unlink()
    for path in store.glob("dead.*.npy*"):
        if path.name != manifest["dead"]:
            path.unlink()


@contextmanager
def _update_lock(store: Path) -> Iterator[None]:
    """One update of a store at a time (a second one would number its segments the same)."""
    with (store / "update.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another update of {store} is running") from None
        yield


def update_store(store_dir: str | Path, inputs: list[str]) -> UpdateResult:
    """Add new ids, replace existing ones (old row dead, new row appended) and delete DeleteCitation ids."""
    store = Path(store_dir)
    read_manifest(store)  # a clear error when it is not a store
    with _update_lock(store):
        return _update_locked(store, inputs)


def _update_locked(store: Path, inputs: list[str]) -> UpdateResult:
    old = read_manifest(store)
    paths = check_inputs(inputs)
    _remove_uncommitted(store, old)
    gen = len(old["history"])
    progress = Progress("corpus update", paths)
    segments = _write_segments(store, paths, [f"u{gen:06d}-{i:06d}" for i in range(len(paths))], progress)
    if not any(seg.rows or seg.deletes for seg in segments):
        _remove_uncommitted(store, old)
        raise UserError(f"no usable documents or deletions in {len(paths)} update file(s)")
    manifest, dead = commit_generation(store, old, segments, "update")
    entry = manifest["history"][-1]
    logger.info("corpus update: %d added, %d replaced, %d deleted (%d deletions of unknown ids); %s live rows",
                entry["added"], entry["replaced"], entry["deleted"], entry["deletes_unknown"], f"{manifest['live']:,}")
    return UpdateResult(first_new_pos=int(old["rows"]), n_new=entry["added"], dead_positions=dead.newly_dead,
                        manifest=manifest)
