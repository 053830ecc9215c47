"""The one registry helper: lazy "module:attribute" entries, clear errors for unknown names."""

from __future__ import annotations

import sys

import pytest

from ragroute.registry import Registry, UnknownName


def test_a_lazy_entry_is_imported_on_first_lookup_only() -> None:
    sys.modules.pop("colorsys", None)
    registry = Registry("colour space", {"hls": "colorsys:rgb_to_hls", "same": lambda x: x})
    assert "hls" in registry and "colorsys" not in sys.modules  # listing and membership import nothing
    assert sorted(registry) == ["hls", "same"] and len(registry) == 2
    assert registry["hls"](1.0, 0.0, 0.0) == (0.0, 0.5, 1.0)
    assert "colorsys" in sys.modules
    registry.register("yiq", "colorsys:rgb_to_yiq")
    assert registry.get("yiq") is sys.modules["colorsys"].rgb_to_yiq


def test_an_unknown_name_lists_the_known_ones() -> None:
    registry = Registry("router model", {"logreg": object, "knn": object})
    with pytest.raises(UnknownName, match=r"unknown router model 'svm' \(known: knn, logreg\)"):
        registry["svm"]
    assert registry.get("svm") is None
    with pytest.raises(ValueError, match="must look like 'module:attribute'"):
        Registry("x", {"bad": "no_colon"})["bad"]


def test_stage_registries_share_the_helper() -> None:
    from ragroute.engines.base import ENGINES, STREAMING_ENGINES
    from router.labels import QUALITY_METRICS
    from router.models import BASELINES, CLASSIFIERS

    for registry in (ENGINES, STREAMING_ENGINES, CLASSIFIERS, BASELINES, QUALITY_METRICS):
        assert isinstance(registry, Registry)
    assert {"vllm", "openai", "transformers"} <= set(ENGINES) and "logreg" in CLASSIFIERS
