"""`bnr sweep`: a grid of cells from one config, resumable, with tables and plots.

The grid is any config keys x their values (`bnr.orchestrate.grid`; defense, p, n and seed by shorthand). The
provider artifacts each cell's defense declares are built once per distinct provider configuration under
`<out>/providers/` and shared (`sweep.providers=build`), or taken as configured (`given`).

Each cell is `<out>/cells/<defense>-p<p>-n<n>-s<seed>[-<key><value>...]/` holding `final/` (what the
defense's finalize made, when it makes a new run), `eval/` (of the deliverable) and `cell.json` (the paths of
its UserLoRA run and deliverable, relative to the cell folder). UserLoRA runs live in `<out>/users/<key>/`, one
per distinct training, so cells that differ only after training (merge knobs, `bnr` vs `bnr-buffer-only`) share
one. A stage that is complete and current (`bnr.runs.keys`) is skipped and an unfinished one resumes from its
checkpoints, so a killed sweep restarts where it stopped and never redoes a finished cell. After the grid
(or after `max_cells` new cells) the sweep folder gets `results.jsonl` (one row per finished cell),
`table.md` (also printed; mean ± std [95% bootstrap interval]), `table.tex`, `uncertainty.md` (bootstrap
intervals, paired comparisons; `bnr.eval.uncertainty`), PNG plots (`hs_vs_p.png`, ..., `overview.png`) and
`sweep.json` (grid status). With `sweep.include_base` the base model itself (no fine-tuning) is evaluated once,
like a cell, in `<out>/base/eval/`, and is the first row of the tables (the same numbers under every p) and the
dashed line of `overview.png`. `bnr demo` is this recipe on the `toy-demo` preset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from bnr import distributed
from bnr.artifacts import atomic_write_json, atomic_write_text, is_complete, path_in_tree, read_manifest
from bnr.config import Config
from bnr.defenses import get_defense
from bnr.errors import BnrError
from bnr.eval.benchmarks import Benchmark
from bnr.eval.protocols import PROTOCOLS
from bnr.eval.report import read_summary
from bnr.eval.roles import headline, metric_benchmarks
from bnr.eval.sweep_report import REPORT, REPORT_PLOT, CellRecord, check_columns, render
from bnr.eval.sweep_report import plot as plot_report
from bnr.orchestrate.evaluation import evaluate_run
from bnr.orchestrate.grid import CELL_FILE, Cell, cell_config, grid, read_cell, run_cell, with_providers
from bnr.progress import Progress
from bnr.runs.keys import reuse_or_build, stage_key

log = logging.getLogger(__name__)
RESULTS = "results.jsonl"
BASE_DIR = "base"
BASE_LABEL = "base (no fine-tuning)"


def build_buffer_first(cfg: Config, cells: list[Cell]) -> None:
    """Build the provider artifacts of the first cell whose defense needs the BufferLoRA before any cell runs.

    The buffer guard checks every user job's output against the registered buffers and refuses to run while none
    is registered (it fails closed); an SFT cell may come before the first `bnr` cell of the grid."""
    from bnr.defenses.base import BUFFER
    from bnr.runs.providers import closure

    if cfg.sweep.providers == "given":
        return
    for cell in cells:
        ccfg = cell_config(cfg, cell)
        if BUFFER in closure(get_defense(ccfg.user.defense).requires):
            with_providers(cfg, ccfg)
            return


def run_base(cfg: Config, benchmarks: list[Benchmark]) -> Path:
    """The base model without any fine-tuning, evaluated like a cell in `<out>/base/eval` (reused while current)."""

    ev = dataclasses.replace(cfg.eval, target="", out=str(Path(cfg.sweep.out) / BASE_DIR / "eval"))
    bcfg = dataclasses.replace(cfg, eval=ev, resume=True, overwrite=False)
    key = stage_key(bcfg, ("eval",), {})
    rebuild = dataclasses.replace(bcfg, overwrite=True)
    return reuse_or_build(ev.out, key, lambda: evaluate_run(rebuild, benchmarks), "base eval")


def execute(cfg: Config) -> list[dict[str, Any]]:
    """Run (or resume) the grid and write the reports; returns the table rows (see `write_reports`)."""
    cells = grid(cfg)
    check_columns(cfg.sweep.report)  # a bad report column fails before anything runs
    protocol = PROTOCOLS.get(cfg.eval.protocol)
    from bnr.eval.suite import build_benchmarks

    benchmarks = build_benchmarks(protocol, cfg.eval)  # judges load once, before any training
    out = Path(cfg.sweep.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.sweep.include_base:
        run_base(cfg, benchmarks)
    failed: dict[str, str] = {}
    build_buffer_first(cfg, selected_cells(cfg, cells))
    if cfg.sweep.launcher == "ray":
        from bnr.recipes import ray_sweep

        failed = ray_sweep.run_cells(cfg, selected_cells(cfg, cells))
    else:
        run_serially(cfg, cells, benchmarks)
    rows = write_reports(cfg, cells, failed) if distributed.is_main() else []
    if failed:
        raise BnrError(
            f"{len(failed)} of {len(cells)} sweep cell(s) failed ({', '.join(sorted(failed)[:4])}"
            f"{', ...' if len(failed) > 4 else ''}); the reasons are in {out / 'sweep.json'}; rerun to retry them"
        )
    return rows


def selected_cells(cfg: Config, cells: list[Cell]) -> list[Cell]:
    """The cells this run works on: every finished cell (its stages are checked, and reused while current) and
    the unfinished ones up to `sweep.max_cells`."""
    budget = cfg.sweep.max_cells
    out = []
    for cell in cells:
        if not is_complete(cell_config(cfg, cell).eval.out):
            if budget is not None and budget <= 0:
                continue
            budget = None if budget is None else budget - 1
        out.append(cell)
    return out


def run_serially(cfg: Config, cells: list[Cell], benchmarks: list[Benchmark]) -> None:
    """`sweep.launcher=local`: the cells one after another in this process."""
    done_before = sum(is_complete(cell_config(cfg, c).eval.out) for c in cells)
    new = 0
    with Progress(len(cells), "sweep", initial=done_before, unit="cell", every=1, enabled=cfg.eval.progress) as bar:
        for cell in cells:
            ccfg = cell_config(cfg, cell)
            finished = is_complete(ccfg.eval.out)
            if not finished and cfg.sweep.max_cells is not None and new >= cfg.sweep.max_cells:
                log.info("stopping after %d new cell(s) (sweep.max_cells); rerun to continue", new)
                break
            log.info("cell %s", cell.name)
            # a finished cell is checked too: each of its stages is reused only while its key is unchanged
            run_cell(with_providers(cfg, ccfg), benchmarks, cell.values())
            if not finished:
                new += 1
                bar.update(1)


def sweep_threads(cfg: Config) -> int | None:
    """The torch threads a sweep runs with: `toy.threads` for the toy world (a `builtin:toy...` model), as `bnr
    demo` and `bnr toy build` do, since the count changes the toy's numbers; None (torch's own) for any other."""
    return cfg.toy.threads if cfg.model.name_or_path.startswith("builtin:toy") else None


def run(cfg: Config) -> Path:
    from bnr.seeding import torch_threads

    with torch_threads(sweep_threads(cfg)):
        execute(cfg)
    for name in ("table.md", REPORT):
        table = Path(cfg.sweep.out) / name
        if table.is_file() and (name == "table.md" or cfg.sweep.report):
            print(("\n" if name == REPORT else "") + table.read_text(), end="")
    return Path(cfg.sweep.out)


def cell_row(cfg: Config, cell: Cell) -> dict[str, Any]:
    """One finished cell's numbers: hs, hs_plus, over_refusal, fa (from its eval summary)."""
    ccfg = cell_config(cfg, cell)
    summary = read_summary(ccfg.eval.out)
    row: dict[str, Any] = {"cell": cell.name, "label": cell.label, **cell.values()}
    row["defense"], row["seed"] = row.pop("user.defense"), row.pop("seed")
    row["p"], row["n"] = row.pop("user.p"), row.pop("user.n")
    paths = Path(ccfg.eval.out).parent / CELL_FILE
    if paths.is_file():  # the user job's cost: its training wall time (not the shared provider stages)
        row["train_s"] = read_manifest(read_cell(paths.parent)["user"]).get("training", {}).get("train_wall_time_s")
    return {**row, **_headline(summary, ccfg.sweep.fa_benchmark)}


def report_record(cfg: Config, cell: Cell) -> CellRecord:
    """A finished cell as the report reads it: its axes from `cell.json` (the grid's, for a cell written before
    `cell.json` recorded them), its evaluation, UserLoRA run and own final stage."""
    ccfg = cell_config(cfg, cell)
    folder = Path(ccfg.eval.out).parent
    recorded = (folder / CELL_FILE).is_file()
    info = json.loads((folder / CELL_FILE).read_text()) if recorded else {}
    axes = dict(info.get("axes") or cell.values())
    label = str(axes.pop("user.defense", cell.defense))
    final = Path(ccfg.user.final_out or "-")
    return CellRecord(
        cell.name,
        label,
        axes,
        Path(ccfg.eval.out),
        user=str(read_cell(folder)["user"]) if recorded else None,
        final=final if final.is_dir() else None,
        fa_benchmark=ccfg.sweep.fa_benchmark,
    )


def base_row(cfg: Config) -> dict[str, Any] | None:
    """The base model's numbers (`sweep.include_base`), or None when it is off or not evaluated yet."""
    folder = Path(cfg.sweep.out) / BASE_DIR / "eval"
    if not cfg.sweep.include_base or not is_complete(folder):
        return None
    return {
        "label": BASE_LABEL,
        "eval": str(folder),
        **_headline(read_summary(folder), cfg.sweep.fa_benchmark),
    }


def plot_styles(cells: list[Cell]) -> dict[str, tuple[str, str]]:
    """Each cell's row label -> (its name in plot legends: the defense's prose name and the extra axis values,
    its defense's colour), `bnr.defenses.base.defense_style`."""
    from bnr.defenses.base import defense_style

    out = {}
    for cell in cells:
        title, colour = defense_style(cell.defense)
        out[cell.label] = (title + cell.label[len(cell.defense) :], colour)
    return out


def _headline(summary: dict[str, Any], fa_benchmark: str | None) -> dict[str, Any]:
    return headline(summary["results"], fa_benchmark, summary)


TABLE_KEYS = ("p", "n", "seed", "hs", "over_refusal", "fa", "train_s")


def write_reports(cfg: Config, cells: list[Cell], failed: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`results.jsonl`, `sweep.json`, `table.md`, `table.tex` and the plots; returns the table rows
    ({defense: row label, p, n, seed, hs, over_refusal, fa}; the base row first, repeated for every (n, p))."""
    from bnr.eval.plots import plot_overview, plot_sweep
    from bnr.eval.tables import latex_table, markdown_table
    from bnr.eval.uncertainty import cell_intervals, group_cells, summarize, write_summary

    out = Path(cfg.sweep.out)
    finished = [c for c in cells if is_complete(cell_config(cfg, c).eval.out)]
    rows = [cell_row(cfg, c) for c in finished]
    atomic_write_text(out / RESULTS, "".join(json.dumps(r) + "\n" for r in rows))
    base = base_row(cfg)
    status = {
        "cells": len(cells),
        "finished": len(finished),
        "protocol": cfg.eval.protocol,
        "pending": [c.name for c in cells if c not in finished],
        "failed": dict(failed or {}),
        **({"base": {**base, "eval": path_in_tree(base["eval"], out)}} if base else {}),
    }
    atomic_write_json(out / "sweep.json", status)
    if not rows:
        return []
    table_rows = [{"defense": r["label"], **{k: v for k, v in r.items() if k in TABLE_KEYS}} for r in rows]
    if base:
        groups = dict.fromkeys((r["n"], r["p"]) for r in rows)
        keep = {k: v for k, v in base.items() if k in TABLE_KEYS}
        table_rows = [
            {"defense": BASE_LABEL, "n": n, "p": p, "seed": cfg.seed, **keep} for n, p in groups
        ] + table_rows
    evals = [(r, Path(cell_config(cfg, c).eval.out)) for r, c in zip(rows, finished)]
    if base:
        evals.append(({**base, "n": None, "p": None, "seed": None}, Path(base["eval"])))
    summaries = [read_summary(f) for _, f in evals]
    benchmarks = [metric_benchmarks(s["results"], cfg.sweep.fa_benchmark, s) for s in summaries]
    summary = summarize(group_cells([(r, f, b) for (r, f), b in zip(evals, benchmarks)], BASE_LABEL if base else None))
    write_summary(out, summary)
    atomic_write_text(out / "table.md", markdown_table(table_rows, cell_intervals(summary)))
    atomic_write_text(out / "table.tex", latex_table(table_rows))
    if cfg.sweep.report:
        records = [report_record(cfg, c) for c in finished]
        if base:
            records.insert(
                0, CellRecord(BASE_DIR, BASE_LABEL, {}, Path(base["eval"]), fa_benchmark=cfg.sweep.fa_benchmark)
            )
        atomic_write_text(out / REPORT, render(out, records, cfg.sweep.report))
        if cfg.sweep.plots:
            plot_report(records, out / REPORT_PLOT, cfg.description)
    if cfg.sweep.plots:
        styles = plot_styles(finished)
        plot_sweep(table_rows, out, reference=BASE_LABEL if base else None, styles=styles)
        plot_overview(table_rows, out / "overview.png", reference=BASE_LABEL if base else None, styles=styles)
    log.info("sweep: %d/%d cells finished; tables and plots in %s", len(finished), len(cells), out)
    return table_rows
