"""The evaluations a deliverable's model card reports: kept in the run's `evaluations.json`, one entry per
(benchmark, protocol, sample count), and shown both as a table and as the card's `model-index` results.

`bnr eval target=<run>` adds its results here: a new measurement of the same benchmark under the same protocol
and sample count replaces the old one; any other is kept beside it. A limited evaluation (`eval.limit`) is not
added (it is not the benchmark's number; lm-eval warns on `--limit` the same way).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json

EVALUATIONS = "evaluations.json"


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """The run's recorded evaluations (oldest first); [] when it has none."""
    try:
        data = json.loads((run_dir / EVALUATIONS).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def entries_of(summary: dict[str, Any], eval_run: Path, run_dir: Path) -> list[dict[str, Any]]:
    """One entry per benchmark of an evaluation summary (`summary.json`); the evaluation run is named relative to
    `run_dir` (no machine path in the card)."""
    where = os.path.relpath(Path(eval_run).resolve(), Path(run_dir).resolve())
    return [
        {
            "benchmark": name,
            "protocol": summary.get("protocol"),
            "n": res.get("n"),
            "metric": res.get("metric"),
            "value": res.get("value"),
            "eval_run": where,
        }
        for name, res in (summary.get("results") or {}).items()
    ]


def _key(entry: dict[str, Any]) -> tuple[Any, ...]:
    return entry.get("benchmark"), entry.get("protocol"), entry.get("n")


def record_evaluations(run_dir: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add `new` entries to the run's `evaluations.json` (same benchmark, protocol and n: replaced) and return all."""
    keys = {_key(e) for e in new}
    kept = [e for e in read_evaluations(run_dir) if _key(e) not in keys] + new
    atomic_write_json(run_dir / EVALUATIONS, kept)
    return kept


def evaluation_lines(evaluations: list[dict[str, Any]]) -> list[str]:
    """The card's evaluation section: a table of every kept evaluation, or how to add one."""
    if not evaluations:
        return ["Not evaluated yet: `bnr eval target=<this folder>` adds the results here."]
    lines = [
        "Every full evaluation of this folder (`bnr eval`; per-sample files in the evaluation run):",
        "",
        "| benchmark | protocol | metric | value (%) | n | evaluation run |",
        "|---|---|---|---|---|---|",
    ]
    for e in evaluations:
        value = e.get("value")
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        lines.append(
            f"| {e.get('benchmark')} | `{e.get('protocol')}` | {e.get('metric')} | {shown} | {e.get('n')} | "
            f"`{e.get('eval_run')}` |"
        )
    return lines


def eval_results(evaluations: list[dict[str, Any]]) -> list[Any]:
    """The evaluations as `huggingface_hub.EvalResult`s (the card's `model-index`)."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=str(e.get("benchmark")),
            dataset_name=f"{e.get('benchmark')} ({e.get('protocol')}, n={e.get('n')})",
            dataset_config=f"{e.get('protocol')}, n={e.get('n')}",  # the Hub groups results by type and config
            dataset_args={"protocol": e.get("protocol"), "n": e.get("n")},
            metric_type=str(e.get("metric")),
            metric_value=e.get("value"),
        )
        for e in evaluations
        if isinstance(e.get("value"), int | float)
    ]
