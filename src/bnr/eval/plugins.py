"""Modules that register extra judges and benchmarks into the `bnr.eval` registries when imported."""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# built-in extensions; `bnr.toy` registers the toy world's exact judges and benchmarks on import
PLUGIN_MODULES = ("bnr.eval.guards", "bnr.eval.http_judge", "bnr.toy")
_loaded = False


def load_plugins() -> None:
    """Import every plugin module once; a plugin package that is absent is skipped."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise
            log.debug("plugin %s not available", name)
