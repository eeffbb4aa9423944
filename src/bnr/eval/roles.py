"""The safety report's three numbers from an evaluation's results, by the role each benchmark declares
(`Benchmark.role`): HS (harm), over-refusal (refusal) and FA (the task's utility) - never by metric name or
benchmark name. Sweep tables, calibration and reports all read them here."""

from __future__ import annotations

from typing import Any

from bnr.errors import BnrError
from bnr.eval.benchmarks import BENCHMARKS, Role, benchmark_class, make_benchmark


def result_name(benchmark: str) -> str:
    """The name a benchmark's result has in an eval summary (`toy-sst2` -> `sst2`); unknown names unchanged."""
    return str(make_benchmark(benchmark).name) if benchmark in BENCHMARKS.names() else benchmark


def result_roles() -> dict[str, Role]:
    """Result name (a benchmark class's `name`) -> its role, over every registered benchmark."""
    return {benchmark_class(n).name: benchmark_class(n).role for n in BENCHMARKS.names()}


def headline(results: dict[str, Any], fa_benchmark: str | None = None) -> dict[str, Any]:
    """hs, hs_plus, over_refusal, fa (and fa_benchmark) from an eval summary's `results` (the first of each role,
    in evaluation order); `fa_benchmark` picks the utility benchmark, by registry name (`toy-sst2`, as in
    eval.benchmarks) or result name (`sst2`)."""
    fa_name = result_name(fa_benchmark) if fa_benchmark else None
    roles = result_roles()
    row: dict[str, Any] = {}
    for name, res in results.items():
        role = roles.get(name, "utility")  # a result no registered benchmark names counts as utility
        if role == "harm":
            row.setdefault("hs", res["hs"])
            row.setdefault("hs_plus", res.get("hs_plus"))
        elif role == "refusal":
            row.setdefault("over_refusal", res["refusal_rate"])
        elif fa_name in (None, name):
            row.setdefault("fa", res["value"])
            row.setdefault("fa_benchmark", name)
    if fa_name and "fa" not in row:
        raise BnrError(f"sweep.fa_benchmark={fa_benchmark!r} is not among the evaluated benchmarks {sorted(results)}")
    return row
