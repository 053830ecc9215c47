"""ragroute.reaper on real processes: a process killed with SIGKILL takes its descendants with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A stage stand-in: starts the reaper, then a forked child (like vLLM's EngineCore on CPU) that starts a grandchild
# (like its worker), and an exec'd child (like a spawned engine); then waits to be killed.
STAGE = """
import multiprocessing, subprocess, sys, time
from ragroute.reaper import reap_descendants_on_exit

def engine_core():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(600)

reap_descendants_on_exit(interval_s=0.2)
multiprocessing.get_context("fork").Process(target=engine_core).start()
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("started", flush=True)
time.sleep(600)
"""


def wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    return alive


def test_sigkilled_process_takes_its_descendants_along():
    stage = subprocess.Popen([sys.executable, "-c", STAGE], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": REPO})
    descendants: list[psutil.Process] = []
    try:
        assert stage.stdout.readline().strip() == "started"
        parent = psutil.Process(stage.pid)
        deadline = time.monotonic() + 30
        while len(parent.children(recursive=True)) < 4:  # reaper, forked child, its child, exec'd child
            assert time.monotonic() < deadline, parent.children(recursive=True)
            time.sleep(0.05)
        time.sleep(0.5)  # the reaper's next look at the tree
        descendants = parent.children(recursive=True)
        os.kill(stage.pid, signal.SIGKILL)
        stage.wait()
        started = time.monotonic()
        alive = wait_gone(descendants, 10)
        assert not alive, f"still running {time.monotonic() - started:.1f}s after the kill: {alive}"
    finally:
        for proc in [psutil.Process(stage.pid), *descendants] if stage.poll() is None else descendants:
            try:
                proc.kill()  # only on failure: what the reaper should have done
            except psutil.NoSuchProcess:
                pass
        stage.wait()
