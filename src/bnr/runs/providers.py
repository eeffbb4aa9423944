"""The provider registry: artifacts the provider trains once and defenses declare by name
(`Defense.train_artifacts`, `Defense.final_artifacts`).

A `Provider` says which config sections its training reads (its stage key), which other providers it is built
on (`parents`), how to point a config at a copy of it (`place`: the stage's own `out` and every consumer's path
field) and what builds it. The orchestration layer (`bnr.orchestrate`) resolves a defense's needs through this
registry and never names a stage; plug-ins register the stages (`bnr.defenses.providers`: buffer, reinforce; a
defense module may register more, e.g. a safety adapter or an unaligned/aligned base pair).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnr.config import Config
from bnr.registry import Registry
from bnr.runs.keys import StageKey, stage_key
from bnr.runs.writer import keyed_stage


@dataclass(frozen=True)
class Provider:
    """One provider stage. `locate(cfg)` is where a user job reads the artifact; `place(cfg, path)` returns
    the config with the stage writing to, and every consumer reading from, `path` (`config_key` names the
    key a user sets to point at an existing copy); `build(cfg)` trains it and returns its run directory;
    `sections` are the config sections it depends on; `extra(cfg)`, if given, is more of the stage key (e.g. a
    defense's resolved provider options); `parent_paths(cfg)`, if given, is where its build reads each parent
    (default: where a user job reads it, each parent's `locate`)."""

    name: str
    doc: str
    config_key: str
    sections: tuple[str, ...]
    parents: tuple[str, ...]
    locate: Callable[[Config], str]
    place: Callable[[Config, str], Config]
    build: Callable[[Config], Path]
    extra: Callable[[Config], Any] | None = None
    parent_paths: Callable[[Config], dict[str, str]] | None = None

    def key(self, cfg: Config) -> StageKey:
        """The stage key of this provider's run built from `cfg`: its sections, its parents' content hashes (a
        parent that is not a complete run enters as missing) and its extra."""
        where = (
            self.parent_paths(cfg) if self.parent_paths else {p: PROVIDERS.get(p).locate(cfg) for p in self.parents}
        )
        parents: dict[str, str | Path] = {p: where[p] for p in self.parents}
        return stage_key(cfg, self.sections, parents, self.extra(cfg) if self.extra else None)

    def run(self, cfg: Config) -> Path:
        """Build the artifact from `cfg` (its run records `key(cfg)`, unless an orchestrator set one for it)."""
        with keyed_stage(self.name, self.key(cfg)):
            return self.build(cfg)


PROVIDERS: Registry[Provider] = Registry("provider artifact")


def register_provider(provider: Provider) -> Provider:
    PROVIDERS.add(provider.name, provider, provider.doc)
    return provider


def closure(names: tuple[str, ...]) -> list[str]:
    """`names` and all their parents, parents first (the order to build them in)."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for parent in PROVIDERS.get(name).parents:
            visit(parent)
        order.append(name)

    for n in names:
        visit(n)
    return order
