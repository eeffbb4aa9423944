"""Provider stages: artifacts the provider trains once and defenses declare by name (`Defense.train_artifacts`,
`Defense.final_artifacts`).

A `Provider` says which config sections its training reads (its stage key), which other providers it is built
on (`parents`), how to point a config at a copy of it (`place`: the stage's own `out` and every consumer's path
field) and which recipe builds it. `pipeline` and `sweep` resolve a defense's needs through this registry; they
never name a stage. Defense modules may register more (a safety adapter, an unaligned/aligned base pair).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnr.config import Config
from bnr.defenses.base import BUFFER, REINFORCE
from bnr.registry import Registry


@dataclass(frozen=True)
class Provider:
    """One provider stage. `locate(cfg)` is where a user job reads the artifact; `place(cfg, path)` returns
        the config with the stage writing to, and every consumer reading from, `path` (`config_key` names the
    key a user sets to point at an existing copy); `build(cfg)` trains it
        (the stage's recipe) and returns its run directory; `sections` are the config sections it depends on;
    `extra(cfg)`, if given, is more of the stage key (e.g. a defense's resolved provider options)."""

    name: str
    doc: str
    config_key: str
    sections: tuple[str, ...]
    parents: tuple[str, ...]
    locate: Callable[[Config], str]
    place: Callable[[Config, str], Config]
    build: Callable[[Config], Path]
    extra: Callable[[Config], Any] | None = None


PROVIDERS: Registry[Provider] = Registry("provider artifact")


def register_provider(provider: Provider) -> Provider:
    PROVIDERS.add(provider.name, provider, provider.doc)
    return provider


def _place_buffer(cfg: Config, path: str) -> Config:
    return dataclasses.replace(
        cfg,
        buffer=dataclasses.replace(cfg.buffer, out=path),
        reinforce=dataclasses.replace(cfg.reinforce, buffer=path),
        user=dataclasses.replace(cfg.user, buffer=path),
    )


def _place_reinforce(cfg: Config, path: str) -> Config:
    return dataclasses.replace(
        cfg,
        reinforce=dataclasses.replace(cfg.reinforce, out=path),
        merge=dataclasses.replace(cfg.merge, reinforce=path),
    )


def _build_buffer(cfg: Config) -> Path:
    from bnr.recipes import train_buffer

    return train_buffer.run(cfg)


def _build_reinforce(cfg: Config) -> Path:
    from bnr.recipes import train_reinforce

    return train_reinforce.run(cfg)


register_provider(
    Provider(
        BUFFER,
        "BufferLoRA: SFT on the provider's harmful set (`buffer` section)",
        "user.buffer",
        ("buffer",),
        (),
        lambda cfg: cfg.user.buffer,
        _place_buffer,
        _build_buffer,
    )
)
register_provider(
    Provider(
        REINFORCE,
        "ReinforceLoRA: refusals + benign on top of the merged buffer (`reinforce` section)",
        "merge.reinforce",
        ("reinforce",),
        (BUFFER,),
        lambda cfg: cfg.merge.reinforce,
        _place_reinforce,
        _build_reinforce,
    )
)


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
