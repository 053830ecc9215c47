"""CPU cost of the request guard (serve/guard.py) per request, without a network or a model in the way.

The same trivial ASGI app (reads the body, answers 200 JSON) is called directly and behind the guard, N times
each, alternating in rounds; CPU time (``time.process_time``) per call is the guard's cost, which does not
depend on how loaded a shared machine is the way wall-clock latencies do.

    .venv/bin/python bench/serve_guard_cost.py --requests 20000 --json /tmp/serve_guard_cost.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time

from serve.guard import RequestGuard

BODY = json.dumps({"model": "router", "messages": [{"role": "user", "content": "What is insulin?"}]}).encode()
SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [
    (b"authorization", b"Bearer k"), (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode())]}


async def app(scope, receive, send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok": true}'})


async def calls(target, n: int) -> float:
    """CPU seconds per call of ``target`` on one request."""
    done = asyncio.Event()

    async def send(message):
        pass

    async def one() -> None:
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": BODY, "more_body": False}
            await done.wait()  # like uvicorn: a disconnect only when the connection ends
            return {"type": "http.disconnect"}

        await target(dict(SCOPE), receive, send)

    started = time.process_time()
    for _ in range(n):
        await one()
    return (time.process_time() - started) / n


async def measure(n: int, rounds: int) -> dict:
    guarded = RequestGuard(app, max_body_bytes=1_000_000, body_timeout_s=30, api_key="k",
                           protected=lambda path: path.startswith("/v1/"))
    plain, guard = [], []
    for _ in range(rounds):
        plain.append(await calls(app, n // rounds))
        guard.append(await calls(guarded, n // rounds))
    plain_us, guard_us = min(plain) * 1e6, min(guard) * 1e6
    return {"requests": n, "rounds": rounds, "plain_cpu_us_per_request": round(plain_us, 2),
            "guarded_cpu_us_per_request": round(guard_us, 2), "guard_cost_us": round(guard_us - plain_us, 2),
            "machine": f"{platform.machine()} {platform.system()}", "date": time.strftime("%Y-%m-%d")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best round counts")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.requests, args.rounds))
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
