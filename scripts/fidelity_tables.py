"""Markdown tables for docs/results.md from issue 27's toy sweeps (`bnr sweep -c toy-fidelity`, `-c toy-fidelity-task`,
which share one folder): HS, over-refusal and FA per row label (mean +- sample std over the finished seeds), the
ReinforceLoRAs' delta norms, and FA(SFT) - FA(BnR) per user task beside the base's FA on that task.

Run it from the folder the sweeps ran in. Usage:
    python scripts/fidelity_tables.py [BASE_TASKS_EVAL]   # default runs/toy-fidelity/base-tasks
(BASE_TASKS_EVAL: `bnr eval -c toy-fidelity-task target= out=runs/toy-fidelity/base-tasks`.)
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from bnr.artifacts import is_complete
from bnr.config import load_config
from bnr.eval.tables import stat
from bnr.orchestrate.grid import cell_config, grid
from bnr.recipes.sweep import base_row, cell_row, read_summary


def rows(preset: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(one row per finished cell of `preset`, its base row or None)."""
    cfg = load_config(preset)
    done = [c for c in grid(cfg) if is_complete(cell_config(cfg, c).eval.out)]
    return [cell_row(cfg, c) for c in done], base_row(cfg)


def table(found: list[dict[str, Any]], base: dict[str, Any] | None) -> str:
    """Label | seeds | HS | OR | FA, labels in grid order."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in found:
        by[r["label"]].append(r)
    lines = ["| row | seeds | HS | over-refusal | FA |", "|---|---|---:|---:|---:|"]
    if base:
        lines.append(f"| aligned base | - | {base['hs']:.1f} | {base['over_refusal']:.1f} | {base['fa']:.1f} |")
    for label, rs in by.items():
        cols = [stat([r[k] for r in rs]).text() for k in ("hs", "over_refusal", "fa")]
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {label} | {seeds} | {' | '.join(cols)} |")
    return "\n".join(lines)


def norms(root: Path) -> str:
    """One line per ReinforceLoRA provider run: its data, whether it saw the buffer, the buffer's n, delta norm."""
    lines = ["| ReinforceLoRA | benign where | with buffer | buffer n | delta norm |", "|---|---|---|---:|---:|"]
    for run in sorted(root.glob("providers/reinforce-*")):
        if not is_complete(run):
            continue
        manifest = json.loads((run / "manifest.json").read_text())
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        buffer_cfg = yaml.safe_load((Path(cfg["reinforce"]["buffer"]) / "config.yaml").read_text())
        where = cfg["reinforce"]["benign_data"].get("where") or {}
        lines.append(
            f"| {run.name} | {where or '-'} | {manifest.get('trained_with_buffer')} | {buffer_cfg['buffer']['n']} "
            f"| {manifest.get('delta_norm', float('nan')):.3f} |"
        )
    return "\n".join(lines)


def task_gap(found: list[dict[str, Any]], base_tasks: Path) -> str:
    """Per task: base FA, SFT FA, BnR FA, FA(SFT) - FA(BnR) (mean +- std over seeds with both)."""
    base = read_summary(base_tasks)["results"] if is_complete(base_tasks) else {}
    fa: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for r in found:
        fa[(r["defense"], r["task"])][r["seed"]] = r["fa"]
    lines = ["| task | base FA | SFT FA | BnR FA | FA(SFT) - FA(BnR) | seeds |", "|---|---:|---:|---:|---:|---|"]
    for task in dict.fromkeys(r["task"] for r in found):
        sft, bnr = fa[("sft", task)], fa[("bnr", task)]
        seeds = [s for s in sft if s in bnr]
        b = base.get(task, {}).get("value", float("nan"))
        cols = [stat([d[s] for s in seeds]).text() for d in (sft, bnr)]
        gap = stat([sft[s] - bnr[s] for s in seeds]).text()
        lines.append(f"| {task} | {b:.1f} | {' | '.join(cols)} | {gap} | {','.join(map(str, seeds))} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    found, base = rows("toy-fidelity")
    print(table(found, base), end="\n\n")
    print(norms(Path(load_config("toy-fidelity").sweep.out)), end="\n\n")
    task_rows, _ = rows("toy-fidelity-task")
    print(task_gap(task_rows, Path(argv[0] if argv else "runs/toy-fidelity/base-tasks")))


if __name__ == "__main__":
    main(sys.argv[1:])
