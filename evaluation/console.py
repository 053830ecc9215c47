"""What a long-running command shows: our progress and results on the terminal, third-party logs in a file.

vLLM's engine processes, torch, Triton and transformers write warnings straight to file descriptors 1 and 2 (from
child processes and C code too), so Python's logging configuration cannot catch them: while
:func:`quiet_third_party` is active those descriptors point at a log file, and our own output (the
:class:`Console` and the ``ragroute`` loggers) goes to a copy of the terminal's descriptor taken before.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


class Console:
    """Our own lines and tables (rich), written to the terminal even while third-party output is redirected."""

    def __init__(self) -> None:
        self.file: TextIO | None = None  # None: whatever sys.stdout is when printing

    def _rich(self) -> Any:
        from rich.console import Console as RichConsole

        return RichConsole(file=self.file or sys.stdout, highlight=False)

    def print(self, *items: Any) -> None:
        self._rich().print(*items)

    def rule(self, title: str) -> None:
        self._rich().rule(f"[bold]{title}")


def _writes_to_fd1(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 1
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False  # a captured stream (pytest), not the process's stdout


@contextmanager
def quiet_third_party(log_path: Path, verbose: bool, console: Console) -> Iterator[None]:
    """Send everything written to file descriptors 1 and 2 (ours excepted) to ``log_path`` until the block ends;
    ``verbose`` leaves them alone. The ``ragroute`` loggers and ``console`` keep writing to the terminal."""
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_fd = os.dup(1)
    saved = (os.dup(1), os.dup(2))
    terminal = os.fdopen(terminal_fd, "w", buffering=1) if _writes_to_fd1(sys.stdout) else sys.stdout
    ours = logging.getLogger("ragroute")
    handlers, propagate = list(ours.handlers), ours.propagate
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("   %(message)s"))
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        console.file, ours.handlers, ours.propagate = terminal, [handler], False
        ours.setLevel(min(ours.level or logging.INFO, logging.INFO))
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            terminal.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if terminal is not sys.stdout:
                terminal.close()
            else:
                os.close(terminal_fd)
            console.file, ours.handlers, ours.propagate = None, handlers, propagate
