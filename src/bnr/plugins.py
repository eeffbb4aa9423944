"""The plug-in loader: the one place that names the plug-in packages and imports them, once.

A plug-in registers its parts (datasets, judges, benchmarks, built-in models, defenses, provider stages) when its
package is imported. The CLI calls `load()` before a command that takes a config (`bnr ls` reads a catalog, or
loads them itself for a live listing), and so does the orchestration layer (the
Python API) when it is imported; core modules never import a plug-in, and a registry miss imports nothing.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from bnr.errors import BnrError

log = logging.getLogger(__name__)

# judges that load weights or call a server, attacks that register judges and benchmarks, the toy world, the
# defenses (with bnr's own provider stages)
PLUGIN_MODULES = (
    "bnr.eval.guards",
    "bnr.eval.http_judge",
    "bnr.eval.content_judge",
    "bnr.attacks.prompts",
    "bnr.data.prompt_sets",
    "bnr.attacks.gcg",
    "bnr.toy",
    "bnr.defenses",
)
# the modules that register a plug-in's section of the root config (`bnr.config.register_section`); imported by
# `load_config_sections` when a config is first built, before or without `load()`
CONFIG_SECTION_MODULES = ("bnr.toy.config",)
# installed packages add plug-ins through these entry point groups (pyproject: [project.entry-points."bnr.defenses"]
# mine = "mypkg.mydefense"); loading one imports its module, whose `@register` / `BENCHMARKS.add` runs
ENTRY_POINT_GROUPS = ("bnr.defenses", "bnr.benchmarks", "bnr.plugins")
_loaded = False


def plugin_entry_points() -> list[Any]:
    """The installed third-party plug-ins (`importlib.metadata` entry points of `ENTRY_POINT_GROUPS`)."""
    from importlib.metadata import entry_points

    return [ep for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)]


def load() -> None:
    """Import every plug-in package once (one that is absent, an optional extra not installed, is skipped), then
    the installed third-party plug-ins."""
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
    for ep in plugin_entry_points():
        try:
            ep.load()
        except Exception as e:  # a broken third-party package: name it, do not crash with its traceback
            raise BnrError(
                f"plug-in {ep.name!r} ({ep.value}, entry point group {ep.group}) failed to load: "
                f"{type(e).__name__}: {e}; fix or uninstall the package that provides it"
            ) from None


def load_config_sections() -> None:
    """Import the modules that register the plug-ins' config sections (`CONFIG_SECTION_MODULES`), once."""
    for name in CONFIG_SECTION_MODULES:
        importlib.import_module(name)
