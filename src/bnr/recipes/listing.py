"""`bnr ls [TOPIC]`: presets and every registry (datasets, templates, defenses, merge methods, ...).

The built-in entries come from `bnr/catalog.json`, so listing imports neither torch nor the plug-ins (well under a
second); it is regenerated with `python -m bnr.recipes.listing` and a test keeps it equal to the live registries.
With a third-party plug-in installed (entry points, `bnr.plugins.ENTRY_POINT_GROUPS`) the registries are read
live, so its entries show.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from bnr import plugins
from bnr.errors import BnrError

# topic -> (module, registry attribute); modules are imported only when listed
TOPICS: dict[str, tuple[str, str]] = {
    "datasets": ("bnr.data.sources", "SOURCES"),
    "templates": ("bnr.data.templates", "TEMPLATES"),
    "defenses": ("bnr.defenses", "DEFENSES"),
    "attacks": ("bnr.attacks", "ATTACKS"),
    "methods": ("bnr.merge", "MERGE_METHODS"),
    "benchmarks": ("bnr.eval.benchmarks", "BENCHMARKS"),
    "judges": ("bnr.eval.judges", "JUDGES"),
    "protocols": ("bnr.eval.protocols", "PROTOCOLS"),
    "trackers": ("bnr.trackers", "TRACKERS"),
}


def _presets() -> dict[str, str]:
    from bnr.config import preset_names, read_yaml

    out = {}
    for name in preset_names():
        out[name] = str(read_yaml(name).get("description", "")).strip().splitlines()[0] if name else ""
    return out


CATALOG = Path(__file__).resolve().parents[1] / "catalog.json"


def _catalog() -> dict[str, dict[str, str]] | None:
    """The built-in registries' entries as recorded, or None when a third-party plug-in is installed (or the
    file is missing): then the registries are read live."""
    from bnr.plugins import plugin_entry_points

    if plugin_entry_points() or not CATALOG.is_file():
        return None
    data: dict[str, dict[str, str]] = json.loads(CATALOG.read_text())
    return data


def describe(topic: str, *, live: bool = False) -> dict[str, str]:
    if topic == "presets":
        return _presets()
    if topic not in TOPICS:
        raise BnrError(f"unknown topic {topic!r}; valid: presets, {', '.join(TOPICS)}")
    catalog = None if live else _catalog()
    if catalog is not None and topic in catalog:
        return catalog[topic]
    module, attr = TOPICS[topic]
    plugins.load()  # a live listing shows every plug-in's entries
    try:
        registry = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return {}
    return dict(registry.describe())


def main(topics: list[str]) -> None:
    for topic in topics or ["presets", *TOPICS]:
        items = describe(topic)
        print(f"{topic}:")
        for name, doc in items.items():
            print(f"  {name:<20} {doc}")


def write_catalog(path: Path = CATALOG) -> Path:
    """Record every built-in registry's entries (what `bnr ls` prints) in `path`."""
    from bnr.artifacts import atomic_write_text

    data = {topic: describe(topic, live=True) for topic in TOPICS}
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_catalog()}")
