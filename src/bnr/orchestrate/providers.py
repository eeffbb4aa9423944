"""Provider artifacts built once and shared: each stage a defense needs (and its parents, first) is built or
reused while its key (its config sections and its parents' content hashes) is unchanged."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from bnr.config import Config
from bnr.defenses import PROVIDERS  # importing the plug-ins registers their provider stages
from bnr.runs.keys import keyed, keyed_run, reuse_or_build
from bnr.runs.providers import closure


def build_providers(
    cfg: Config, names: tuple[str, ...], place_at: Callable[[str, str], Path], *, force: bool = False
) -> Config:
    """Build or reuse the provider artifacts `names` (and their parents, first); `place_at(name, key)` is the
    run directory for one configuration of it. Returns `cfg` pointing every consumer at them."""
    built: dict[str, Path] = {}
    for name in closure(names):
        provider = PROVIDERS.get(name)
        key = provider.key(cfg)  # its parents are placed in `cfg` already (built first)
        out = keyed_run(place_at(name, key), key)
        cfg = provider.place(cfg, str(out))
        build_cfg = dataclasses.replace(cfg, overwrite=True)
        if force:
            with keyed(out, key):
                built[name] = provider.run(build_cfg)
        else:
            built[name] = reuse_or_build(out, key, lambda p=provider, c=build_cfg: p.run(c), name)  # type: ignore[misc]
    return cfg
