"""What hostile connections cost a real `ragroute serve` (issue 23): its memory while clients send endless request
heads, and how long slow-loris connections live.

Starts the echo upstream and `ragroute serve` (chat only) as subprocesses, then:
* ``--endless N --mb M``: N connections each send an unterminated header of M MB (the issue's run: 8 x 64 MB
  grew the server by 511 MB); reports the server's RSS growth and how many bytes each could send before the
  server refused (431) and closed;
* ``--slow N``: N connections trickle header lines every 0.5 s; reports how long until the server closed them
  all (http.header_timeout_s).

    .venv/bin/python bench/serve_hostile.py --endless 8 --mb 64 --slow 100
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args} exited"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def endless_header(port: int, megabytes: int) -> int:
    """Bytes sent before the server stopped taking them."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nx-endless: ")
    sent = 0
    try:
        while sent < megabytes * 2**20:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass
    finally:
        sock.close()
    return sent


def slow_loris(port: int, n: int) -> float:
    """Seconds until the server closed all ``n`` trickling connections."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n")
    started, open_ = time.monotonic(), set(range(n))
    while open_ and time.monotonic() - started < 120:
        for i in list(open_):
            try:
                socks[i].sendall(b"x-slow: 1\r\n")
            except OSError:
                open_.discard(i)
        time.sleep(0.5)
    for sock in socks:
        sock.close()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endless", type=int, default=8)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--slow", type=int, default=100)
    args = parser.parse_args()
    env = {**os.environ, "RAGROUTE_API_KEY": "", "PYTHONPATH": str(REPO)}
    up_port, port = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "serve.echo_upstream", "--port", str(up_port)], env=env)]
    try:
        wait_for(f"http://127.0.0.1:{up_port}/v1/models", procs[0])
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as cfg:
            cfg.write(f"rag: false\nrouting: {{if_missing: teacher}}\nhealth: {{probe_interval_s: 0}}\n"
                      f"student: {{engine: {{name: openai, base_url: 'http://127.0.0.1:{up_port}/v1'}}}}\n"
                      f"teacher: {{engine: {{name: openai, base_url: 'http://127.0.0.1:{up_port}/v1'}}}}\n")
        procs.append(subprocess.Popen([sys.executable, "-m", "ragroute.cli", "serve", "--config", cfg.name, "--port",
                                       str(port), "--log-level", "warning"], env=env))
        wait_for(f"http://127.0.0.1:{port}/ready", procs[1])
        server = psutil.Process(procs[1].pid)
        before = server.memory_info().rss
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak[0] = max(peak[0], server.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(args.endless) as pool:
            sent = list(pool.map(lambda _: endless_header(port, args.mb), range(args.endless)))
        stop.set()
        sampler.join()
        print(f"{args.endless} x {args.mb} MB endless headers: each sent {max(sent) / 2**20:.1f} MB at most before "
              f"the server closed; server RSS {before / 2**20:.0f} MB -> peak {peak[0] / 2**20:.0f} MB "
              f"(+{(peak[0] - before) / 2**20:.1f} MB)")
        print(f"{args.slow} slow-loris connections: all closed after {slow_loris(port, args.slow):.1f} s")
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code
        print(f"then GET /health: {health}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
