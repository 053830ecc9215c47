"""Run a command as a user would and measure it: wall time, peak RSS of its whole process tree (psutil polling),
and the peak between the log lines that mark its stages."""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)
POLL_S = 0.2


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    seconds: float
    peak_rss_bytes: int
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, tree RSS)
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, stderr/stdout line)
    killed: bool = False
    cpu_s: float = 0.0  # user + system seconds of the command and every descendant it waited for

    def peak_between(self, start_s: float, stop_s: float) -> int:
        return max((rss for t, rss in self.rss_samples if start_s <= t <= stop_s), default=0)

    def first_line(self, needle: str) -> float | None:
        return next((t for t, line in self.lines if needle in line), None)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(
    cmd: list[str],
    log_path: Path,
    env: dict | None = None,
    kill_when: str | None = None,
    nice: int = 10,
    timeout_s: float | None = None,
) -> Measured:
    """Runs ``cmd`` (niced), tees its merged output to ``log_path``; with ``kill_when``, SIGKILLs the whole tree
    as soon as an output line contains that text (the killed-build check)."""
    started = time.perf_counter()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        preexec_fn=lambda: os.nice(nice),
        start_new_session=True,
    )
    ps = psutil.Process(proc.pid)
    result = Measured(cmd=cmd, returncode=-1, seconds=0.0, peak_rss_bytes=0)
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            rss = tree_rss(ps)
            result.rss_samples.append((time.perf_counter() - started, rss))
            result.peak_rss_bytes = max(result.peak_rss_bytes, rss)
            done.wait(POLL_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    assert proc.stdout is not None
    with log_path.open("w") as out:
        # Progress bars rewrite one line with \r; split on both so stage markers are seen when they appear.
        buffer = b""
        while chunk := proc.stdout.read1(65536):
            buffer += chunk
            *complete, buffer = buffer.replace(b"\r", b"\n").split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                if not line.strip():
                    continue
                out.write(f"{time.perf_counter() - started:9.1f} {line}\n")
                out.flush()
                result.lines.append((time.perf_counter() - started, line))
                if kill_when and not result.killed and kill_when in line:
                    log.info("killing %s at: %s", cmd[:4], line)
                    os.killpg(proc.pid, signal.SIGKILL)
                    result.killed = True
            if timeout_s and time.perf_counter() - started > timeout_s and not result.killed:
                os.killpg(proc.pid, signal.SIGKILL)
                result.killed = True
    result.returncode = proc.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.cpu_s = usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    done.set()
    poller.join()
    result.seconds = time.perf_counter() - started
    return result
