"""Evaluation harness: one batched generation loop, benchmarks, judges, protocol presets and aggregation.

Importing `bnr.eval` registers the built-in benchmarks (harmful, over-refusal, gsm8k, sst2, agnews) and the
`keyword` judge; judges with heavier dependencies (beaverdam, llamaguard, http) and plug-in packages such as the
toy world register when the plug-in loader imports them (`bnr.plugins.load`: the CLI and the Python API call it).
"""

from __future__ import annotations

from bnr.eval import safety, tasks
from bnr.eval.benchmarks import BENCHMARKS, Benchmark, BenchmarkResult, make_benchmark, run_benchmark
from bnr.eval.generate import generate
from bnr.eval.judges import JUDGES, Judge, Verdict, make_judge
from bnr.eval.refusal import REFUSAL_PHRASES, is_incoherent, is_refusal

__all__ = [
    "BENCHMARKS",
    "JUDGES",
    "REFUSAL_PHRASES",
    "Benchmark",
    "BenchmarkResult",
    "Judge",
    "Verdict",
    "generate",
    "is_incoherent",
    "is_refusal",
    "make_benchmark",
    "make_judge",
    "run_benchmark",
    "safety",
    "tasks",
]
