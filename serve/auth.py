"""API-key auth that cannot switch off silently: where the key comes from, the start-up check, the log line.

A server reachable from other machines (any host but loopback) without a key refuses to start unless the
config says ``auth.allow_anonymous: true``; the auth state is logged at start either way.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os

from ragroute.errors import UserError
from serve.config import ServeConfig

log = logging.getLogger("ragroute.serve")


def resolve_api_key(cfg: ServeConfig) -> str | None:
    """The bearer token clients must send: ``auth.api_key``, else the variable ``auth.api_key_env`` (unset or
    empty = none)."""
    if cfg.auth.api_key:
        return cfg.auth.api_key
    if cfg.auth.api_key_env:
        return os.environ.get(cfg.auth.api_key_env) or None
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def auth_state(cfg: ServeConfig) -> str:
    """One line saying whether /v1 needs a key, and where the key comes from (never the key itself)."""
    if cfg.auth.api_key:
        return "auth: on (bearer key from auth.api_key)"
    env = cfg.auth.api_key_env
    if env and os.environ.get(env):
        return f"auth: on (bearer key from ${env})"
    why = f"${env} is {'empty' if env in os.environ else 'unset'}" if env else "auth.api_key_env is not set"
    return f"auth: OFF, /v1 is open to anyone who can reach {cfg.host} ({why})"


def check_auth_exposure(cfg: ServeConfig) -> None:
    """Refuse to serve without a key on a non-loopback address unless ``auth.allow_anonymous``; log the state."""
    state = auth_state(cfg)
    if resolve_api_key(cfg) is None:
        if not is_loopback(cfg.host) and not cfg.auth.allow_anonymous:
            raise UserError(
                f"refusing to listen on {cfg.host} without an API key ({state.split('(', 1)[1].rstrip(')')}): set "
                f"${cfg.auth.api_key_env or 'RAGROUTE_API_KEY'} (auth.api_key_env), or set auth.allow_anonymous: true "
                "to serve anonymously on purpose"
            )
        log.warning(state)
    else:
        log.info(state)


def bearer_rejection(authorization: bytes | None, api_key: str) -> str | None:
    """Why an ``Authorization`` header value does not carry ``api_key`` (constant-time), or None if it does."""
    if not authorization:
        return "missing bearer token"
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("latin-1"),
                                                             api_key.encode("utf-8")):
        return "invalid API key"
    return None
