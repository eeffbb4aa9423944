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


def metric_benchmarks(results: dict[str, Any], fa_benchmark: str | None = None) -> dict[str, str]:
    """Which benchmark of an eval summary's `results` gives each number, by role: hs (the first harm benchmark),
    over_refusal (the first refusal one), fa (`fa_benchmark`, by registry name - `toy-sst2`, as in eval.benchmarks -
    or result name - `sst2`; else the first utility one), in evaluation order."""
    fa_name = result_name(fa_benchmark) if fa_benchmark else None
    roles = result_roles()
    names: dict[str, str] = {}
    for name in results:
        role = roles.get(name, "utility")  # a result no registered benchmark names counts as utility
        key = {"harm": "hs", "refusal": "over_refusal"}.get(role)
        if key is None and fa_name in (None, name):
            key = "fa"
        if key:
            names.setdefault(key, name)
    if fa_name and "fa" not in names:
        raise BnrError(f"sweep.fa_benchmark={fa_benchmark!r} is not among the evaluated benchmarks {sorted(results)}")
    return names


def headline(results: dict[str, Any], fa_benchmark: str | None = None) -> dict[str, Any]:
    """hs, hs_plus, over_refusal, fa (and fa_benchmark) from an eval summary's `results` (`metric_benchmarks`)."""
    names = metric_benchmarks(results, fa_benchmark)
    row: dict[str, Any] = {}
    if "hs" in names:
        res = results[names["hs"]]
        row |= {"hs": res["hs"], "hs_plus": res.get("hs_plus")}
    if "over_refusal" in names:
        row["over_refusal"] = results[names["over_refusal"]]["refusal_rate"]
    if "fa" in names:
        row |= {"fa": results[names["fa"]]["value"], "fa_benchmark": names["fa"]}
    return row
