"""``main`` functions of the corpus commands."""

from __future__ import annotations

from typing import Any

from index.config import CorpusBuildConfig, CorpusUpdateConfig


def corpus_build_main(cfg: CorpusBuildConfig) -> dict[str, Any]:
    from index.corpus_build import build_store

    return build_store(cfg.inputs, cfg.out, cfg.workers)


def corpus_update_main(cfg: CorpusUpdateConfig) -> dict[str, Any]:
    from index.corpus_build import update_store

    return update_store(cfg.store, cfg.inputs).manifest


def corpus_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What ``ragroute corpus info`` prints: counts, fingerprint, problems and the history (no segment list)."""
    keys = ("format", "rows", "live", "fingerprint", "problems", "history")
    return {k: manifest[k] for k in keys} | {"segments": len(manifest["segments"]), "sources": len(manifest["sources"])}
