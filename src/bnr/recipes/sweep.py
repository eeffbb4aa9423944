"""`bnr sweep`: a grid of (defense, p, n, seed) cells from one config, resumable, with tables and plots.

Each cell is `<out>/cells/<defense>-p<p>-n<n>-s<seed>/` holding `user/` (finetune), `merged/` (QR merge, for
defenses that merge the ReinforceLoRA) and `eval/`. A stage whose run directory is complete is skipped and an
unfinished one resumes from its checkpoints, so a killed sweep restarts where it stopped and never redoes a
finished cell. After the grid (or after `max_cells` new cells) the sweep folder gets `results.jsonl` (one row
per finished cell), `table.md`, `table.tex`, PNG plots and `sweep.json` (grid status).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json, atomic_write_text, is_complete
from bnr.config import Config
from bnr.defenses import DEFENSES
from bnr.errors import BnrError
from bnr.eval.benchmarks import Benchmark
from bnr.eval.protocols import PROTOCOLS
from bnr.eval.report import read_summary
from bnr.progress import Progress

log = logging.getLogger(__name__)
RESULTS = "results.jsonl"


@dataclass(frozen=True)
class Cell:
    defense: str
    p: float
    n: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.defense}-p{self.p:g}-n{self.n}-s{self.seed}"


def grid(cfg: Config) -> list[Cell]:
    s = cfg.sweep
    for d in s.defenses:
        DEFENSES.get(d)
    if not (s.defenses and s.p and s.n and s.seeds):
        raise BnrError("sweep.defenses, sweep.p, sweep.n and sweep.seeds must each list at least one value")
    bad = [p for p in s.p if not 0.0 <= p <= 1.0]
    if bad:
        raise BnrError(f"sweep.p values must be in [0, 1] (got {bad})")
    return [Cell(d, float(p), int(n), int(seed)) for d in s.defenses for p in s.p for n in s.n for seed in s.seeds]


def cell_config(cfg: Config, cell: Cell) -> Config:
    """The config of one cell: stage outputs inside the cell folder, resume on, the cell's seed."""
    root = Path(cfg.sweep.out) / "cells" / cell.name
    user = dataclasses.replace(cfg.user, defense=cell.defense, p=cell.p, n=cell.n, out=str(root / "user"))
    merge = dataclasses.replace(cfg.merge, user=user.out, out=str(root / "merged"))
    target = merge.out if DEFENSES.get(cell.defense).merge_reinforce else user.out
    ev = dataclasses.replace(cfg.eval, target=target, out=str(root / "eval"))
    return dataclasses.replace(cfg, seed=cell.seed, user=user, merge=merge, eval=ev, resume=True, overwrite=False)


def run_cell(cfg: Config, benchmarks: list[Benchmark]) -> None:
    """finetune -> (merge) -> eval, skipping every stage already complete."""
    from bnr.recipes import evaluate, finetune, merge

    if not is_complete(cfg.user.out):
        finetune.run(cfg)
    if DEFENSES.get(cfg.user.defense).merge_reinforce and not is_complete(cfg.merge.out):
        merge.run(cfg)
    if not is_complete(cfg.eval.out):
        evaluate.run_with(cfg, benchmarks)


def run(cfg: Config) -> Path:
    cells = grid(cfg)
    protocol = PROTOCOLS.get(cfg.eval.protocol)
    from bnr.recipes.evaluate import build_benchmarks

    benchmarks = build_benchmarks(protocol, cfg.eval)  # judges load once, before any training
    out = Path(cfg.sweep.out)
    out.mkdir(parents=True, exist_ok=True)
    done_before = sum(is_complete(cell_config(cfg, c).eval.out) for c in cells)
    new = 0
    with Progress(len(cells), "sweep", initial=done_before, unit="cell", every=1, enabled=cfg.eval.progress) as bar:
        for cell in cells:
            ccfg = cell_config(cfg, cell)
            if is_complete(ccfg.eval.out):
                continue
            if cfg.sweep.max_cells is not None and new >= cfg.sweep.max_cells:
                log.info("stopping after %d new cell(s) (sweep.max_cells); rerun to continue", new)
                break
            log.info("cell %s", cell.name)
            run_cell(ccfg, benchmarks)
            new += 1
            bar.update(1)
    write_reports(cfg, cells)
    return out


def cell_row(cfg: Config, cell: Cell) -> dict[str, Any]:
    """One finished cell's numbers: hs, hs_plus, over_refusal, fa (from its eval summary)."""
    results = read_summary(cell_config(cfg, cell).eval.out)["results"]
    row: dict[str, Any] = {"cell": cell.name, **dataclasses.asdict(cell)}
    fa_name = cfg.sweep.fa_benchmark
    for name, res in results.items():
        if res["metric"] == "hs":
            row.setdefault("hs", res["hs"])
            row.setdefault("hs_plus", res.get("hs_plus"))
        elif res["metric"] == "refusal_rate":
            row.setdefault("over_refusal", res["refusal_rate"])
        elif fa_name in (None, name):
            row.setdefault("fa", res["value"])
            row.setdefault("fa_benchmark", name)
    if fa_name and "fa" not in row:
        raise BnrError(f"sweep.fa_benchmark={fa_name!r} is not among the evaluated benchmarks {sorted(results)}")
    return row


def write_reports(cfg: Config, cells: list[Cell]) -> None:
    from bnr.eval.plots import plot_sweep
    from bnr.eval.tables import latex_table, markdown_table

    out = Path(cfg.sweep.out)
    finished = [c for c in cells if is_complete(cell_config(cfg, c).eval.out)]
    rows = [cell_row(cfg, c) for c in finished]
    atomic_write_text(out / RESULTS, "".join(json.dumps(r) + "\n" for r in rows))
    status = {
        "cells": len(cells),
        "finished": len(finished),
        "protocol": cfg.eval.protocol,
        "pending": [c.name for c in cells if c not in finished],
    }
    atomic_write_json(out / "sweep.json", status)
    if not rows:
        return
    table_rows = [
        {k: v for k, v in r.items() if k in ("defense", "p", "n", "seed", "hs", "over_refusal", "fa")} for r in rows
    ]
    atomic_write_text(out / "table.md", markdown_table(table_rows))
    atomic_write_text(out / "table.tex", latex_table(table_rows))
    if cfg.sweep.plots:
        plot_sweep(table_rows, out)
    log.info("sweep: %d/%d cells finished; tables and plots in %s", len(finished), len(cells), out)
