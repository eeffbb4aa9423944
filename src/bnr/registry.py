"""Name -> object registries for pluggable parts (datasets, templates, merge methods, judges, ...).

Plug-in packages fill them when imported (`bnr.plugins.load`); a lookup of an unknown name imports nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bnr.errors import BnrError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """A named collection; unknown names raise a `BnrError` that lists the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            text = doc if doc is not None else getattr(obj, "description", None) or getattr(obj, "__doc__", None) or ""
            self._docs[name] = text.strip().splitlines()[0] if text.strip() else ""
            return obj

        return deco

    def add(self, name: str, obj: T, doc: str | None = None) -> None:
        self.register(name, doc)(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise BnrError(f"unknown {self.kind} {name!r}; valid: {valid}")
        return self._items[name]

    def build(self, name: str, **options: Any) -> Any:
        """Call the factory registered as `name` with `options`; bad options are a one-line error naming it."""
        factory: Any = self.get(name)
        try:
            return factory(**options)
        except TypeError as e:
            raise BnrError(f"{self.kind} {name!r}: bad option(s) {sorted(options)} ({e})") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        return {n: self._docs[n] for n in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
