"""The one registry helper: names a config uses → the things they stand for.

An entry is the thing itself (a class, a factory) or ``"module:attribute"``, imported on first use, so a
registry of heavy backends (vLLM, torch, scikit-learn) can be listed and validated without importing them. A
name that is not registered raises :class:`UnknownName` (a ``KeyError``) whose message lists the known names.
Registries: engines (batch and streaming faces), retrievers, rerankers, router classifiers and baselines,
distillation losses, answer-quality metrics.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def import_target(target: str) -> Any:
    """The object ``"module:attribute"`` names."""
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"a lazy registry entry must look like 'module:attribute', not '{target}'")
    return getattr(importlib.import_module(module_name), attribute)


class Registry(MutableMapping[str, T], Generic[T]):
    """Name → ``T``; a ``str`` entry is ``"module:attribute"`` and is imported (once) when first looked up."""

    def __init__(self, what: str, entries: Mapping[str, T | str] | None = None) -> None:
        self.what = what
        self._entries: dict[str, T | str] = dict(entries or {})

    def register(self, name: str, target: T | str) -> None:
        """Make ``target`` (or ``"module:attribute"``) available under ``name``."""
        self._entries[name] = target

    def known(self) -> str:
        return ", ".join(sorted(self._entries))

    def __getitem__(self, name: str) -> T:
        try:
            entry = self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.what} '{name}' (known: {self.known()})") from None
        if isinstance(entry, str):
            entry = self._entries[name] = import_target(entry)
        return entry  # type: ignore[return-value]

    def __contains__(self, name: object) -> bool:  # without importing the entry
        return name in self._entries

    def __setitem__(self, name: str, target: T | str) -> None:
        self.register(name, target)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
