"""Name -> object registries for pluggable parts (datasets, templates, merge methods, judges, ...)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bnr.errors import BnrError

T = TypeVar("T")
log = logging.getLogger(__name__)

# modules that register extra entries (datasets, judges, benchmarks, ...) when imported; loaded on the first
# lookup by name in any registry, so `{source: toy}` or `judge=toy-harm` work without an explicit import
PLUGIN_MODULES = (
    "bnr.eval.guards",
    "bnr.eval.http_judge",
    "bnr.eval.content_judge",
    "bnr.attacks.prompts",
    "bnr.data.prompt_sets",
    "bnr.attacks.gcg",
    "bnr.toy",
)
# installed packages add plug-ins through these entry point groups (pyproject: [project.entry-points."bnr.defenses"]
# mine = "mypkg.mydefense"); loading one imports its module, whose `@register` / `BENCHMARKS.add` runs
ENTRY_POINT_GROUPS = ("bnr.defenses", "bnr.benchmarks", "bnr.plugins")
_plugins_loaded = False


def plugin_entry_points() -> list[Any]:
    """The installed third-party plug-ins (`importlib.metadata` entry points of `ENTRY_POINT_GROUPS`)."""
    from importlib.metadata import entry_points

    return [ep for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)]


def load_plugins() -> None:
    """Import every plugin module once; a plugin package that is absent is skipped."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise
            log.debug("plugin %s not available", name)
    for ep in plugin_entry_points():
        try:
            ep.load()
        except Exception as e:  # a broken third-party package: name it, do not crash with its traceback
            raise BnrError(
                f"plug-in {ep.name!r} ({ep.value}, entry point group {ep.group}) failed to load: "
                f"{type(e).__name__}: {e}; fix or uninstall the package that provides it"
            ) from None


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
            load_plugins()
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
        load_plugins()
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        return {n: self._docs[n] for n in self.names()}

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
