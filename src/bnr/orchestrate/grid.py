"""The one grid engine's cells: the product of the sweep's axes, each axis a config key and its values.

`sweep.defenses`, `sweep.p`, `sweep.n` and `sweep.seeds` are shorthand for the axes `user.defense`, `user.p`,
`user.n` and `seed`; `sweep.axes` adds any other config key (or replaces a shorthand). A linked axis sets several
keys together: its values are mappings with a `name` (`{task: [{name: sst2, user.benign_data.path: benign_sst2,
sweep.fa_benchmark: toy-sst2}, ...]}`). A cell's config is the sweep's config with the cell's values set by key
and validated like any config, so a bad axis value is a one-line error naming the key. An axis that a cell's
defense never reads (neither its stages' sections - `user`, those its options default to, its provider stages' -
nor the run-wide keys) is dropped from that cell, so `sft` under a `merge.scale` axis is one cell, not one per
scale. Used by `bnr sweep` and every preset built on it (the ablations).

A cell runs as `run_cell(with_providers(cfg, cell_config(cfg, cell)), benchmarks)`: its defense's provider
artifacts built once under `<out>/providers/`, the user job (UserLoRAs shared under `<out>/users/`), the
evaluation of the deliverable, and `cell.json` (the paths of its UserLoRA run and deliverable) beside it.
`bnr sweep`, its Ray launcher and `bnr attack-search` (one trial = one cell) run cells this way.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnr import distributed
from bnr.artifacts import atomic_write_json, path_from, path_in_tree
from bnr.config import Config, deep_merge, from_dict, to_dict
from bnr.defenses import DEFENSES, PROVIDERS, get_defense
from bnr.defenses.base import canonical_name, option_sources
from bnr.errors import BnrError
from bnr.eval.benchmarks import Benchmark
from bnr.orchestrate.evaluation import evaluate_run
from bnr.orchestrate.providers import build_providers
from bnr.orchestrate.userjob import run_user_job
from bnr.runs.keys import reuse_or_build, stage_key
from bnr.runs.providers import closure

CELL_FILE = "cell.json"
SHORTHAND = {"user.defense": "defenses", "user.p": "p", "user.n": "n", "seed": "seeds"}


@dataclass(frozen=True)
class Cell:
    """One grid point: the shorthand axes as fields, any other axes in `extra` ((key, value) pairs)."""

    defense: str
    p: float
    n: int
    seed: int
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        base = f"{self.defense}-p{self.p:g}-n{self.n}-s{self.seed}"
        return base + "".join(f"-{key}{_token(value)}" for key, value in self.extra)

    @property
    def label(self) -> str:
        """The row name in tables: the defense plus its extra axis values (`bnr merge.scale=0.5`)."""
        return " ".join([self.defense, *(f"{key}={_token(value)}" for key, value in self.extra)])

    def values(self) -> dict[str, Any]:
        """Every axis of this cell, key -> value (a linked axis by its name)."""
        shorthand = {"user.defense": self.defense, "user.p": self.p, "user.n": self.n, "seed": self.seed}
        return {**shorthand, **{k: v["name"] if isinstance(v, dict) else v for k, v in self.extra}}

    def settings(self) -> dict[str, Any]:
        """The config keys the extra axes set (a linked axis sets each key of its value)."""
        out: dict[str, Any] = {}
        for key, value in self.extra:
            out.update({k: v for k, v in value.items() if k != "name"} if isinstance(value, dict) else {key: value})
        return out


def _token(value: Any) -> str:
    if isinstance(value, dict):
        return _token(value["name"])
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "".join(c if c.isalnum() or c in "._+" else "_" for c in text)


def axes(cfg: Config) -> list[tuple[str, list[Any]]]:
    """(key, values) per axis, shorthand first, in the order the grid varies them (last = fastest)."""
    s = cfg.sweep
    out = [(key, list(s.axes.get(key, getattr(s, attr)))) for key, attr in SHORTHAND.items()]
    out += [(key, list(values)) for key, values in s.axes.items() if key not in SHORTHAND]
    empty = [key for key, values in out if not values]
    if empty:
        raise BnrError(f"sweep axes {empty} have no values; give each at least one (e.g. sweep.p=[0.1])")
    return out


BLOCK_KEYS = ("defenses", "p", "n", "seeds", "axes")


def blocks(cfg: Config) -> list[Config]:
    """The sweep's sub-grids: one config per `sweep.blocks` entry (its keys replace the sweep's), or the sweep."""
    out = []
    for i, block in enumerate(cfg.sweep.blocks):
        unknown = sorted(set(block) - set(BLOCK_KEYS)) if isinstance(block, dict) else ["(not a mapping)"]
        if unknown:
            raise BnrError(f"sweep.blocks[{i}]: unknown key(s) {unknown}; valid: {', '.join(BLOCK_KEYS)}")
        out.append(dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, blocks=[], **block)))
    return out or [cfg]


def grid(cfg: Config) -> list[Cell]:
    """All cells of every block (in order, each once), each checked: its defense exists and its config validates."""
    cells: list[Cell] = []
    for sub in blocks(cfg):
        cells += [c for c in _grid(sub) if c not in cells]
    return cells


def _grid(cfg: Config) -> list[Cell]:
    ax = axes(cfg)
    keys = [key for key, _ in ax]
    cells = []
    for combo in itertools.product(*(values for _, values in ax)):
        v = dict(zip(keys, combo))
        get_defense(str(v["user.defense"]))
        p = float(v["user.p"])
        if not 0.0 <= p <= 1.0:
            raise BnrError(f"sweep.p values must be in [0, 1] (got {p})")
        reads = sections_read(str(v["user.defense"]))
        extra = tuple((k, v[k]) for k in keys if k not in SHORTHAND and _affects(k, v[k], reads))
        cell = Cell(str(v["user.defense"]), p, int(v["user.n"]), int(v["seed"]), extra)
        if cell not in cells:
            cells.append(cell)
    for key, values in ax[len(SHORTHAND) :]:
        for value in values:
            if isinstance(value, dict) and "name" not in value:
                raise BnrError(f"sweep axis {key!r}: a linked value needs a `name` (got {value})")
            # an unknown key or a bad value fails before anything runs
            with_value(cfg, Cell("sft", 0.0, 1, 0, ((key, value),)).settings())
    return cells


RUN_WIDE = ("user", "attacks", "seed", "model", "template", "max_length", "eval", "sweep")


def sections_read(defense: str) -> set[str]:
    """The config sections a user job of `defense` depends on (dotted; a section covers its keys)."""
    d = get_defense(defense)
    out = {*RUN_WIDE, *option_sources(defense)}
    if d.trains_like:  # its UserLoRA is that defense's
        out |= option_sources(d.trains_like, training=True)
    # its own options (and those of the defense it trains like), under any of their registered names
    own = {canonical_name(x) for x in (defense, d.trains_like) if x}
    out.update(f"defenses.{name}" for name in DEFENSES.names() if canonical_name(name) in own)
    for name in closure(d.requires):
        out.update(PROVIDERS.get(name).sections)
    return out


def _affects(key: str, value: Any, sections: set[str]) -> bool:
    keys = [k for k in value if k != "name"] if isinstance(value, dict) else [key]
    return any(k == s or k.startswith(s + ".") or s.startswith(k + ".") for k in keys for s in sections)


def with_value(cfg: Config, values: dict[str, Any]) -> Config:
    """`cfg` with config keys set (dotted key -> value), validated like a loaded config."""
    if not values:
        return cfg
    items: dict[str, Any] = {}
    for key, value in values.items():
        node = items
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    try:
        return from_dict(deep_merge(to_dict(cfg), items))
    except BnrError as e:
        raise BnrError(f"sweep axis value {values}: {e}") from None


def cell_config(cfg: Config, cell: Cell) -> Config:
    """The config of one cell: its axis values, stage outputs inside the cell folder, resume on."""
    root = Path(cfg.sweep.out) / "cells" / cell.name
    cfg = with_value(cfg, cell.settings())
    user = dataclasses.replace(
        cfg.user, defense=cell.defense, p=cell.p, n=cell.n, out=str(root / "user"), final_out=str(root / "final")
    )
    ev = dataclasses.replace(cfg.eval, out=str(root / "eval"))
    return dataclasses.replace(cfg, seed=cell.seed, user=user, eval=ev, resume=True, overwrite=False)


def with_providers(cfg: Config, ccfg: Config) -> Config:
    """The cell config pointing at its defense's provider artifacts: built (or reused) under
    `<out>/providers/<name>-<key>/` with the sweep's seed when `sweep.providers=build`, as configured if `given`."""
    if cfg.sweep.providers == "given":
        return ccfg
    needs = get_defense(ccfg.user.defense).requires
    root = Path(cfg.sweep.out) / "providers"
    placed = build_providers(dataclasses.replace(ccfg, seed=cfg.seed), needs, lambda name, key: root / f"{name}-{key}")
    return dataclasses.replace(placed, seed=ccfg.seed)


def run_cell(cfg: Config, benchmarks: list[Benchmark], axes: dict[str, Any] | None = None) -> None:
    """user job (train, finalize; each reused when unchanged) -> eval of the deliverable. `cell.json` records the
    user run and the deliverable (relative to the cell folder) and the cell's `axes` (its grid values,
    `Cell.values`) for the report."""

    user, deliverable = run_user_job(cfg, user_root=Path(cfg.sweep.out) / "users")
    cell_dir = Path(cfg.eval.out).parent
    if distributed.is_main():
        info: dict[str, Any] = {
            "user": path_in_tree(user, cell_dir),
            "deliverable": path_in_tree(deliverable, cell_dir),
        }
        atomic_write_json(cell_dir / CELL_FILE, {**info, **({"axes": axes} if axes is not None else {})})
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, target=str(deliverable)))
    key = stage_key(cfg, ("eval",), {"target": deliverable})
    rebuild = dataclasses.replace(cfg, overwrite=True)  # only reached when the old evaluation is stale
    reuse_or_build(cfg.eval.out, key, lambda: evaluate_run(rebuild, benchmarks), "eval")


def read_cell(cell_dir: str | Path) -> dict[str, Path]:
    """A cell's `cell.json`: {"user": its UserLoRA run, "deliverable": ...} as folders. Recorded relative to the
    cell folder; a file of an older bnr holds absolute paths, or paths relative to where that sweep ran (read as
    they are while they exist from here)."""
    cell = Path(cell_dir)
    out = {}
    for key, recorded in json.loads((cell / CELL_FILE).read_text()).items():
        if key not in ("user", "deliverable"):  # the cell's axes
            continue
        here, old = path_from(recorded, cell), Path(recorded)
        out[key] = old if not here.exists() and not old.is_absolute() and old.exists() else here
    return out
