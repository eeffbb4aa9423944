"""Evaluate a model in memory on the toy benchmarks: HS, over-refusal and FA, with per-sample rows kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bnr.eval.benchmarks import BenchmarkResult, run_benchmark


@dataclass
class ToyScores:
    """Headline numbers (%) of one model: HS, over-refusal (OR), FA per evaluated task."""

    hs: float
    over_refusal: float
    fa: dict[str, float]
    results: list[BenchmarkResult]

    def row(self) -> dict[str, Any]:
        return {"hs": self.hs, "or": self.over_refusal, **{f"fa_{t}": v for t, v in self.fa.items()}}


def evaluate(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    *,
    template: str = "alpaca",
    batch_size: int = 128,
    progress: bool = False,
) -> ToyScores:
    """Run `toy-harmful`, `toy-over-refusal` and `toy-<task>` for each task on `model` (greedy)."""
    results = {}
    for name in ["toy-harmful", "toy-over-refusal", *(f"toy-{t}" for t in tasks)]:
        results[name] = run_benchmark(
            name, model, tokenizer, template=template, batch_size=batch_size, progress=progress
        )
    return ToyScores(
        hs=results["toy-harmful"].value,
        over_refusal=results["toy-over-refusal"].value,
        fa={t: results[f"toy-{t}"].value for t in tasks},
        results=list(results.values()),
    )
