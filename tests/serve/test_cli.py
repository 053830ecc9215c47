"""`ragroute serve` as users run it: a subprocess from a YAML, probes answering; bad settings exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from ragroute.config import REPO_ROOT


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragroute.cli", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def test_help_lists_every_setting():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--student.engine.openai.base-url", "--routing.if-missing", "--limits.max-concurrent",
                 "--auth.api-key-env"):
        assert flag in result.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--config", "configs/serve/absent.yaml"], "config file not found"),
    (["--student.engine.name", "tgi"], "unknown engine"),
    (["--teacher.engine.name", "openai"], "needs engine.openai.base_url"),
    (["--port", "70000"], "port must be"),
    (["--routing.if-missing", "error", "--routing.router-path", "/nonexistent/router.skops"], "router file not found"),
    (["--student.model", "smollm2-135m-pruned", "--teacher.model", "/nonexistent/model-dir"], "teacher"),
    ([], "student: no model configured and no artifact records one"),
    (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 without an API key"),
])
def test_bad_settings_exit_2_without_traceback(args, needle):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_serves_from_yaml(tmp_path, tiny_model_dir, free_port):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"rag: false\nstudent:\n  model: {tiny_model_dir}\n  engine: {{name: transformers, device: cpu}}\nteacher:\n"
        f"  model: {tiny_model_dir}\n  engine: {{name: transformers, device: cpu}}\nrouting:\n  if_missing: teacher\n"
    )
    env = {**os.environ, "RAGROUTE_API_KEY": ""}
    proc = subprocess.Popen([sys.executable, "-m", "ragroute.cli", "serve", "--config", str(config), "--port", str(port)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        body = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "router", "max_tokens": 2, "messages": [{"role": "user", "content": "What is insulin?"}]}).json()
        assert body["ragroute"]["router"]["source"] == "teacher-only"
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    # SIGTERM: a graceful shutdown, then exit 0 (uvicorn re-raises the signal; serve's own handler absorbs it).
    assert proc.returncode == 0
    assert "Application shutdown complete" in output
