"""`bnr demo`: the whole story on the toy world, on a CPU, in minutes - the `toy-demo` preset of `bnr sweep`.

The grid, its cell names, the stages, the table and the plots are the sweep's (`bnr.recipes.sweep`): the
preset's `sweep` section compares `sft`, `bnr`, `bnr-buffer-only` and `bnr-reinforce-only` (the defense
registry's names) at p = 0.1 and 0.5, three seeds and `merge.scale` 0.5 and 1.0, beside the aligned base
(`sweep.include_base`). `bnr sweep -c toy-demo` runs exactly the same cells in the same folder and reuses every
finished stage, and so does a rerun of `bnr demo` (it resumes).

What the demo adds around the sweep: the aligned toy base is built (or found in the cache) first, with
`toy.threads` torch threads; the Markdown table is printed with the wall time; and `results.json` records the
aggregate rows, every cell's row, the base model and the wall time per phase. Writes into `sweep.out`
(`out=`): the sweep's `results.jsonl`, `table.md`, `table.tex`, `overview.png` and `*_vs_p.png`, then
`results.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json
from bnr.config import Config, to_dict
from bnr.errors import BnrError

log = logging.getLogger(__name__)
TOY_BASE = "builtin:toy"
RESULTS_JSON = "results.json"


def run(cfg: Config) -> Path:
    from bnr.seeding import torch_threads

    with torch_threads(cfg.toy.threads):  # restored after: `run` is also called from Python (and the tests)
        return _run(cfg)


def _run(cfg: Config) -> Path:
    from bnr.recipes import sweep

    if cfg.template != cfg.toy.base.template:
        raise BnrError(
            f"template={cfg.template!r} differs from the toy base's {cfg.toy.base.template!r}; use the same"
        )
    started = time.time()
    timing: dict[str, float] = {}
    cfg = with_toy_base(cfg, timing)
    t = time.time()
    table_rows = sweep.execute(cfg)
    timing["sweep"] = time.time() - t
    wall = time.time() - started
    out = Path(cfg.sweep.out)
    atomic_write_json(out / RESULTS_JSON, results(cfg, table_rows, wall, timing))
    table = out / "table.md"
    if table.is_file():
        print(table.read_text(), end="")
    plotted = f", plot in {out / 'overview.png'}" if cfg.sweep.plots and table_rows else ""
    print(f"\nwall time {wall:.0f} s ({cfg.toy.threads} threads); results in {out / RESULTS_JSON}{plotted}")
    return out


def with_toy_base(cfg: Config, timing: dict[str, float]) -> Config:
    """Build (or find) the aligned toy base before anything else when the model is `builtin:toy`.

    `builtin:toy` always names the default base; a config whose `toy.base` or `toy.cache_dir` differs gets
    the folder of its own base as `model.name_or_path` instead. Any other model is used as given."""
    if cfg.model.name_or_path != TOY_BASE:
        return cfg
    from bnr.toy.base import base_dir, toy_base_path
    from bnr.toy.config import ToyConfig

    t = time.time()
    base = toy_base_path(cfg.toy, progress=cfg.user.train.progress)
    timing["base"] = time.time() - t
    if base_dir(cfg.toy) == base_dir(ToyConfig()):
        return cfg  # keep the name, so `bnr sweep -c toy-demo` computes the same stage keys
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(base)))


def results(cfg: Config, table_rows: list[dict[str, Any]], wall: float, timing: dict[str, float]) -> dict[str, Any]:
    """`results.json`: mean +- std per table row (`rows`), every finished cell (`cells`), the base model's
    scores (`base`), the wall time in total and per phase (base build, sweep), and the resolved config."""
    from bnr.eval.tables import summary_records
    from bnr.recipes import sweep

    out = Path(cfg.sweep.out)
    results_file = out / sweep.RESULTS
    cells = [json.loads(x) for x in results_file.read_text().splitlines()] if results_file.is_file() else []
    return {
        "rows": summary_records(table_rows),
        "cells": cells,
        "base": sweep.base_row(cfg),
        "wall_time_s": round(wall, 1),
        "timing_s": {k: round(v, 1) for k, v in timing.items()},
        "threads": cfg.toy.threads,
        "sweep": json.loads((out / "sweep.json").read_text()),
        "config": to_dict(cfg),
    }
