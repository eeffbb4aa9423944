"""The plug-in loader: the one place that names the plug-in packages and imports them, once.

A plug-in registers its parts (datasets, judges, benchmarks, built-in models, defenses, provider stages) when its
package is imported. The CLI calls `load()` before running a command, and so does the orchestration layer (the
Python API) when it is imported; core modules never import a plug-in, and a registry miss imports nothing.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# the judges that load weights or call a server, the toy world, the defenses (with bnr's own provider stages)
PLUGIN_MODULES = ("bnr.eval.guards", "bnr.eval.http_judge", "bnr.eval.content_judge", "bnr.toy", "bnr.defenses")
_loaded = False


def load() -> None:
    """Import every plug-in package once; one that is absent (an optional extra not installed) is skipped."""
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
