"""What the docs promise: the README's curl example works as written; /docs and /openapi.json are off unless
enabled."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from ragroute.config import REPO_ROOT
from serve.app import create_app
from serve.config import ServeConfig
from serve.server import server_in_thread


def echo_config(upstream, echo_upstream: str, **kwargs) -> ServeConfig:
    return ServeConfig(student=upstream(echo_upstream, name="echo-student"),
                       teacher=upstream(echo_upstream, name="echo-teacher"), **kwargs)


@contextmanager
def serve_until_ready(app) -> Iterator[str]:
    with server_in_thread(app) as url:
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.1)
        yield url


@pytest.fixture(scope="module")
def rag_server(upstream, echo_upstream, tmp_path_factory):
    pipeline = tmp_path_factory.mktemp("pipe") / "pipeline.yaml"
    pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 3\nfinal_n: 2\n"
                        f"index_dir: {pipeline.parent / 'idx'}\n")
    with serve_until_ready(create_app(echo_config(upstream, echo_upstream, pipeline=str(pipeline)))) as url:
        yield url


def test_readme_curl_example_works_as_written(rag_server):
    readme = (REPO_ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("curl ") and "/v1/answer" in line)
    command = shlex.split(re.sub(r"\blocalhost:8080\b", rag_server.removeprefix("http://"), line))
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    body = json.loads(result.stdout)
    assert "error" not in body, body
    assert body["answer"].strip() and body["routed_to"] in ("student", "teacher")


def test_api_docs_are_off_by_default(rag_server):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{rag_server}{path}").status_code == 404


def test_api_docs_can_be_enabled(upstream, echo_upstream):
    with serve_until_ready(create_app(echo_config(upstream, echo_upstream, rag=False, docs=True))) as url:
        assert httpx.get(f"{url}/docs").status_code == 200
        assert "/v1/chat/completions" in httpx.get(f"{url}/openapi.json").json()["paths"]
