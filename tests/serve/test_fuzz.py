"""A fuzz pass: schemathesis generates valid and invalid requests from the app's own OpenAPI schema and sends
them to the running server; no response may be a 5xx. Bounded (``MAX_EXAMPLES`` per operation) to stay fast."""

from __future__ import annotations

import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from serve.app import create_app
from serve.config import ServeConfig
from serve.server import server_in_thread

KEY = "fuzz-key"
MAX_EXAMPLES = 100


@pytest.fixture(scope="module")
def fuzz_server(echo_upstream, upstream, tmp_path_factory, monkeypatch_module):
    """Both models behind the FAKE echo upstream (no model cost), the BM25 demo pipeline for /v1/answer, auth on."""
    monkeypatch_module.setenv("RAGROUTE_API_KEY", KEY)
    pipeline = tmp_path_factory.mktemp("pipe") / "pipeline.yaml"
    pipeline.write_text(f"corpus: demo\nretriever: bm25\nreranker: none\nretrieval_n: 3\nfinal_n: 2\n"
                        f"index_dir: {pipeline.parent / 'idx'}\n")
    cfg = ServeConfig(student=upstream(echo_upstream, name="echo-student"),
                      teacher=upstream(echo_upstream, name="echo-teacher"),
                      pipeline=str(pipeline))
    app = create_app(cfg)
    with server_in_thread(app) as url:
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.1)
        yield app, url


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# The schema does not depend on the settings: an app that is never started gives it at collection time.
schema = schemathesis.openapi.from_dict(create_app(ServeConfig(rag=False)).openapi())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case, fuzz_server):
    _, url = fuzz_server
    case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error],
                           timeout=60)
