"""serve's router: the fitted router file named in the config, or a stated policy without one.

Decisions go through :class:`ragroute.routing.RoutingPolicy`, the same code eval routes with, so each decision
carries its score, threshold and source and responses can show why.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ragroute.errors import UserError
from ragroute.routing import RouteDecision, RoutingPolicy, fitted, heuristic, teacher_only
from serve.config import RoutingConfig

log = logging.getLogger("ragroute.serve")

__all__ = ["RouteDecision", "RoutingPolicy", "expand_path", "load_bundle", "routing_policy"]


def expand_path(path: str) -> Path:
    """``$RAGROUTE_HOME`` (defaulting like the rest of ragroute), other ``$VARS`` and ``~`` expanded."""
    from ragroute.models import ragroute_home

    path = path.replace("${RAGROUTE_HOME}", str(ragroute_home())).replace("$RAGROUTE_HOME", str(ragroute_home()))
    return Path(os.path.expandvars(path)).expanduser()


def load_bundle(cfg: RoutingConfig) -> Any | None:
    """The router file named by ``cfg.router_path`` (a ``router.persist.RouterBundle``), or None when there is
    none and ``if_missing`` allows that."""
    if cfg.router_path:
        path = expand_path(cfg.router_path)
        if path.exists():
            from router.persist import load_router

            return load_router(path, trusted=cfg.trusted_types)
        if cfg.if_missing == "error":
            raise UserError(f"router file not found: {path} (fit one with `ragroute router fit` or `ragroute demo`)")
        log.warning("router file %s not found; routing by the '%s' policy", path, cfg.if_missing)
    elif cfg.if_missing == "error":
        raise UserError("routing.router_path is not set and routing.if_missing is 'error'")
    return None


def routing_policy(cfg: RoutingConfig, bundle: Any | None) -> RoutingPolicy:
    """The fitted router (its own threshold unless ``cfg.threshold`` overrides it), else the ``if_missing``
    policy."""
    if bundle is not None:
        return fitted(bundle, bundle.threshold if cfg.threshold is None else cfg.threshold)
    return heuristic() if cfg.if_missing == "heuristic" else teacher_only()
