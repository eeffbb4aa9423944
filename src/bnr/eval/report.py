"""Evaluation outputs: per-sample JSONL next to an aggregate JSON for every benchmark, plus `summary.json`.

Every number can be audited sample by sample: `<benchmark>.samples.jsonl` holds id, prompt, completion, verdicts
and scores; `<benchmark>.json` holds metric, value, n, protocol, judges, decoding settings and the model and
adapter hashes it was measured on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json, atomic_write_text
from bnr.eval.benchmarks import BenchmarkResult

SUMMARY = "summary.json"


def samples_path(folder: Path, benchmark: str) -> Path:
    return folder / f"{benchmark}.samples.jsonl"


def aggregate_path(folder: Path, benchmark: str) -> Path:
    return folder / f"{benchmark}.json"


def aggregate_record(result: BenchmarkResult, *, protocol: str, target: dict[str, Any]) -> dict[str, Any]:
    """The aggregate JSON of one benchmark run."""
    bench = result.settings.get("benchmark", {})
    return {
        "benchmark": result.benchmark,
        "metric": result.metric,
        "value": result.value,
        "n": result.n,
        "metrics": result.metrics,
        "protocol": protocol,
        "judges": bench.get("judges"),
        "decoding": result.settings.get("decoding"),
        "settings": bench,
        "target": target,
        "cached_completions": result.cached,
        "wall_time_s": result.wall_time_s,
    }


def write_result(folder: Path, result: BenchmarkResult, *, protocol: str, target: dict[str, Any]) -> dict[str, Any]:
    """Write `<benchmark>.samples.jsonl` and `<benchmark>.json` into `folder`; return the aggregate record."""
    lines = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in result.samples)
    atomic_write_text(samples_path(folder, result.benchmark), lines)
    record = aggregate_record(result, protocol=protocol, target=target)
    atomic_write_json(aggregate_path(folder, result.benchmark), record)
    return record


def write_summary(
    folder: Path,
    records: list[dict[str, Any]],
    *,
    protocol: str,
    target: dict[str, Any],
    benchmarks: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """`summary.json`: {benchmark: {metric: value, ...}} with the protocol and target once, and `benchmarks`: each
    benchmark's declared role, version and orientation (`bnr.eval.roles.declaration`), by result name."""
    summary: dict[str, Any] = {
        "protocol": protocol,
        "target": target,
        "results": {
            r["benchmark"]: {"metric": r["metric"], "value": r["value"], "n": r["n"], **r["metrics"]} for r in records
        },
    }
    if benchmarks is not None:
        summary["benchmarks"] = benchmarks
    atomic_write_json(folder / SUMMARY, summary)
    return folder / SUMMARY


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(run_dir) / SUMMARY).read_text())
    return data
