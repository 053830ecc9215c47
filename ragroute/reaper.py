"""No orphaned engine processes: a small watcher process that kills this process's descendants when it dies.

vLLM runs its model in separate processes (EngineCore, which starts the workers). Its workers watch EngineCore
(a death pipe), but EngineCore does not watch the process that started it: a data-gen, eval or serve killed
with SIGKILL left an EngineCore (~0.8 GB) and a worker (~2.4 GB, on a GPU the GPU's memory) running for good.

A parent-death signal (``prctl(PR_SET_PDEATHSIG)``) would have to be set inside the engine process, which vLLM
starts with ``fork`` on CPUs and ``spawn`` on GPUs (no hook of ours runs there), and it fires when the *thread*
that started the child ends. So the stage instead starts this watcher (:func:`reap_descendants_on_exit`), in
its own session so that a signal to the stage's process group spares it. It notes the stage's descendants
every ``interval_s`` and, once the stage is gone (its parent pid changes), kills those that are still running,
their own children included (psutil checks each one's identity, so a reused pid is never hit). It exits with
the stage; it never outlives it by more than the reaping.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

log = logging.getLogger("ragroute.reaper")

_started: dict[int, subprocess.Popen] = {}  # pid of the watched process -> its reaper


def reap_descendants_on_exit(interval_s: float = 0.5) -> None:
    """Start the watcher for this process (once per process; a no-op where psutil is missing)."""
    pid = os.getpid()
    if pid in _started:
        return
    try:
        import psutil  # noqa: F401  (the watcher's own dependency)
    except ImportError:
        log.warning("psutil is not installed: engine processes may outlive this process if it is killed")
        return
    _started[pid] = subprocess.Popen(
        [sys.executable, __file__, str(pid), str(interval_s)], stdin=subprocess.DEVNULL, start_new_session=True,
        close_fds=True,
    )


def _watch(parent_pid: int, interval_s: float) -> None:
    import signal

    import psutil

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the stage; it ends, then this reaps
    me = os.getpid()
    known: dict[int, psutil.Process] = {}
    while os.getppid() == parent_pid:
        try:
            for child in psutil.Process(parent_pid).children(recursive=True):
                if child.pid != me:
                    known.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(interval_s)
    victims: dict[int, psutil.Process] = {}
    for proc in known.values():
        try:
            if proc.is_running():
                victims[proc.pid] = proc
                victims.update((c.pid, c) for c in proc.children(recursive=True) if c.pid != me)
        except psutil.NoSuchProcess:
            continue
    for proc in victims.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(victims.values()), timeout=5)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), float(sys.argv[2]))
