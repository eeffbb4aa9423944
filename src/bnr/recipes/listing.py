"""`bnr ls [TOPIC]`: presets and every registry (datasets, templates, defenses, merge methods, ...)."""

from __future__ import annotations

import importlib

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


def describe(topic: str) -> dict[str, str]:
    if topic == "presets":
        return _presets()
    if topic not in TOPICS:
        raise BnrError(f"unknown topic {topic!r}; valid: presets, {', '.join(TOPICS)}")
    module, attr = TOPICS[topic]
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
