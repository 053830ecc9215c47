"""Auth cannot switch off silently: no key on a non-loopback address refuses to start unless allowed; the
state is logged; the bearer check itself."""

from __future__ import annotations

import logging

import pytest

from ragroute.errors import UserError
from serve.auth import auth_state, bearer_rejection, check_auth_exposure, is_loopback, resolve_api_key
from serve.config import AuthConfig, ServeConfig


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                ("10.0.0.5", False), ("api.example.org", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("value", [None, ""])
def test_public_host_without_key_refuses_to_start(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("RAGROUTE_API_KEY", raising=False)
    else:
        monkeypatch.setenv("RAGROUTE_API_KEY", value)
    with pytest.raises(UserError) as info:
        check_auth_exposure(ServeConfig(host="0.0.0.0"))
    message = str(info.value)
    assert "refusing to listen on 0.0.0.0" in message and "RAGROUTE_API_KEY" in message
    assert ("empty" if value == "" else "unset") in message and "allow_anonymous" in message


def test_public_host_anonymous_on_purpose_starts_with_a_warning(caplog):
    cfg = ServeConfig(host="0.0.0.0", auth=AuthConfig(allow_anonymous=True))
    with caplog.at_level(logging.WARNING, logger="ragroute.serve"):
        check_auth_exposure(cfg)
    assert any("auth: OFF" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_loopback_without_key_starts_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="ragroute.serve"):
        check_auth_exposure(ServeConfig(host="127.0.0.1"))
    assert "auth: OFF" in caplog.text


def test_key_from_env_is_used_and_logged_without_the_key(monkeypatch, caplog):
    monkeypatch.setenv("MY_KEY", "s3cret")
    cfg = ServeConfig(host="0.0.0.0", auth=AuthConfig(api_key_env="MY_KEY"))
    with caplog.at_level(logging.INFO, logger="ragroute.serve"):
        check_auth_exposure(cfg)
    assert resolve_api_key(cfg) == "s3cret"
    assert auth_state(cfg) == "auth: on (bearer key from $MY_KEY)" and "s3cret" not in caplog.text


@pytest.mark.parametrize(("header", "reason"), [(None, "missing bearer token"), (b"", "missing bearer token"),
                                                (b"Bearer wrong", "invalid API key"), (b"Basic s3cret", "invalid API key"),
                                                (b"Bearer s3cret", None), (b"bearer  s3cret ", None)])
def test_bearer_check(header, reason):
    assert bearer_rejection(header, "s3cret") == reason
