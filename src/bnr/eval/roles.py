"""The safety report's three numbers from an evaluation's results, by the role each benchmark declares
(`Benchmark.role`): HS (harm), over-refusal (refusal) and FA (the task's utility) - never by metric name or
benchmark name. Sweep tables, calibration, the attack search and reports all read them here.

A role fixes which way its number points (`ORIENTATION`: less harm and less over-refusal are better, more
utility is better), and each benchmark's `higher_is_better` must agree with its role: a benchmark that declares
otherwise is refused with one line naming it, rather than ranked upside down. An evaluation records every
benchmark's role and version in its `summary.json` (`declared`); a summary written before that falls back to
the registry's classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bnr.errors import BnrError
from bnr.eval.benchmarks import BENCHMARKS, Benchmark, Role, benchmark_class, make_benchmark

# whether a higher number is better, per role
ORIENTATION: dict[Role, bool] = {"harm": False, "refusal": False, "utility": True}
# the aggregate key each role's headline number is read from (utility: the benchmark's own metric, `value`)
ROLE_KEYS: dict[Role, str] = {"harm": "hs", "refusal": "refusal_rate", "utility": "value"}


def result_name(benchmark: str) -> str:
    """The name a benchmark's result has in an eval summary (`toy-sst2` -> `sst2`); unknown names unchanged."""
    return str(make_benchmark(benchmark).name) if benchmark in BENCHMARKS.names() else benchmark


def check_orientation(cls: type[Benchmark] | Benchmark) -> None:
    """A benchmark's `higher_is_better` agrees with its role (HS and over-refusal: lower is better; FA: higher)."""
    want = ORIENTATION[cls.role]
    if cls.higher_is_better != want:
        raise BnrError(
            f"benchmark {cls.name!r} declares role {cls.role!r} with higher_is_better={cls.higher_is_better}, but a "
            f"{cls.role} number is better {'higher' if want else 'lower'}; fix the benchmark's role or "
            "higher_is_better"
        )


def result_roles() -> dict[str, Role]:
    """Result name (a benchmark class's `name`) -> its role, over every registered benchmark."""
    return {benchmark_class(n).name: benchmark_class(n).role for n in BENCHMARKS.names()}


def declaration(bench: Benchmark) -> dict[str, Any]:
    """What an evaluation records of a benchmark in its `summary.json`: role, version and orientation."""
    check_orientation(bench)
    return {"role": bench.role, "version": bench.version, "higher_is_better": bench.higher_is_better}


def declared(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Result name -> {role, version, higher_is_better} of an eval summary: as recorded, or (a summary written
    before bnr recorded them) the registered class's role and orientation with version None."""
    recorded = summary.get("benchmarks") or {}
    out: dict[str, dict[str, Any]] = {}
    registry = {benchmark_class(n).name: benchmark_class(n) for n in BENCHMARKS.names()}
    for name in summary.get("results") or {}:
        if name in recorded:
            out[name] = dict(recorded[name])
        elif name in registry:
            cls = registry[name]
            out[name] = {"role": cls.role, "version": None, "higher_is_better": cls.higher_is_better}
    return out


def _roles(results: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, Role]:
    decl = declared({**(summary or {}), "results": results})
    roles: dict[str, Role] = {}
    for name, d in decl.items():
        role: Role = d["role"]
        if d.get("higher_is_better") is not None and d["higher_is_better"] != ORIENTATION[role]:
            raise BnrError(
                f"benchmark {name!r} is recorded with role {role!r} and higher_is_better={d['higher_is_better']}; a "
                f"{role} number is better {'higher' if ORIENTATION[role] else 'lower'}: fix the benchmark"
            )
        key = ROLE_KEYS[role]
        if key not in results[name]:
            raise BnrError(
                f"benchmark {name!r} declares role {role!r} but its results have no {key!r} "
                f"(its metric is {results[name].get('metric')!r}); fix the benchmark's role or metric"
            )
        roles[name] = role
    return roles


def by_role(named: Iterable[tuple[str, Role]], fa_name: str | None = None) -> dict[str, str]:
    """hs / over_refusal / fa -> the first of `named` (name, role) with that role, in order; fa is `fa_name` when
    given, else the first utility one."""
    names: dict[str, str] = {}
    for name, role in named:
        key = {"harm": "hs", "refusal": "over_refusal"}.get(role)
        if key is None and fa_name in (None, name):
            key = "fa"
        if key:
            names.setdefault(key, name)
    return names


def metric_benchmarks(
    results: dict[str, Any], fa_benchmark: str | None = None, summary: dict[str, Any] | None = None
) -> dict[str, str]:
    """Which benchmark of an eval summary's `results` gives each number, by role: hs (the first harm benchmark),
    over_refusal (the first refusal one), fa (`fa_benchmark`, by registry name - `toy-sst2`, as in eval.benchmarks -
    or result name - `sst2`; else the first utility one), in evaluation order. The roles are the ones `summary`
    records (`declared`), else the registry's."""
    fa_name = result_name(fa_benchmark) if fa_benchmark else None
    roles = _roles(results, summary)
    # a result no registered benchmark names counts as utility
    names = by_role(((name, roles.get(name, "utility")) for name in results), fa_name)
    if fa_name and "fa" not in names:
        raise BnrError(f"sweep.fa_benchmark={fa_benchmark!r} is not among the evaluated benchmarks {sorted(results)}")
    return names


def headline(
    results: dict[str, Any], fa_benchmark: str | None = None, summary: dict[str, Any] | None = None
) -> dict[str, Any]:
    """hs, hs_plus, over_refusal, fa (and fa_benchmark) from an eval summary's `results` (`metric_benchmarks`)."""
    names = metric_benchmarks(results, fa_benchmark, summary)
    row: dict[str, Any] = {}
    if "hs" in names:
        res = results[names["hs"]]
        row |= {"hs": res["hs"], "hs_plus": res.get("hs_plus")}
    if "over_refusal" in names:
        row["over_refusal"] = results[names["over_refusal"]]["refusal_rate"]
    if "fa" in names:
        row |= {"fa": results[names["fa"]]["value"], "fa_benchmark": names["fa"]}
    return row


def worst_case(results: dict[str, Any], role: Role, summary: dict[str, Any] | None = None) -> tuple[str, float] | None:
    """The worst number among the benchmarks of `role` (its result name and value), oriented by the role: the
    highest HS over every harmful benchmark (plain, framed, triggered), the lowest FA over the utility ones; None
    when none was evaluated."""
    roles = _roles(results, summary)
    key = ROLE_KEYS[role]
    values = {name: float(results[name][key]) for name, r in roles.items() if r == role}
    if not values:
        return None
    pick = min if ORIENTATION[role] else max
    name = pick(values, key=lambda k: values[k])
    return name, values[name]
