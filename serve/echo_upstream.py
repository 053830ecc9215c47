"""A FAKE OpenAI-compatible upstream that echoes: for load tests of the serving layer, never for answers.

It answers ``/v1/chat/completions`` (plain and streamed) with the last user message's words, one word per chunk,
after an optional fixed delay, so the load benchmark can measure what the ragroute server adds on top of an
upstream call without a model's cost in the way. ``python -m serve.echo_upstream --port 9000`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

ECHO_MODEL = "echo-upstream"


def echo_words(body: dict[str, Any]) -> list[str]:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    words = (users[-1] if users else "").split() or ["echo"]
    return [w if i == 0 else " " + w for i, w in enumerate(words[: int(body.get("max_tokens") or 256)])]


def create_echo_app(delay_s: float = 0.0, model: str = ECHO_MODEL) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                                          "owned_by": "echo"}]})

    async def chat(request: Request):
        body = await request.json()
        words = echo_words(body)
        if delay_s:
            await asyncio.sleep(delay_s)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage = {"prompt_tokens": sum(len(m.get("content", "").split()) for m in body.get("messages", [])),
                 "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": model, "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                             "finish_reason": "stop"}],
            })

        async def events():
            def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                              "model": model, "choices": [{"index": 0, "delta": delta,
                                                                           "finish_reason": finish}]}) + "\n\n"

            yield chunk({"role": "assistant", "content": ""})
            for word in words:
                yield chunk({"content": word})
            yield chunk({}, "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                yield "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                             "model": model, "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="FAKE echo OpenAI-compatible upstream (load tests only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--delay-s", type=float, default=0.0, help="fixed delay before answering")
    args = parser.parse_args(argv)
    uvicorn.run(create_echo_app(args.delay_s), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
