"""The benchmarks of one evaluation: a protocol's options for each benchmark with the user's `eval.*` overrides
applied, built from the benchmark registry."""

from __future__ import annotations

import dataclasses
from typing import Any

from bnr.config import EvalConfig
from bnr.errors import BnrError
from bnr.eval.benchmarks import Benchmark, benchmark_class, make_benchmark
from bnr.eval.protocols import Protocol


def benchmark_options(name: str, protocol: Protocol, ev: EvalConfig) -> dict[str, Any]:
    """The protocol's options for `name` with the user's overrides applied (data, options, limit, tokens, judges).

    Judges and the backdoor trigger go to every benchmark that takes judges (`Benchmark.takes_judges`: harmful,
    toy-harmful).
    """
    opts = protocol.benchmark_options(name)
    if name in ev.data:
        opts.pop("prompts", None)
        opts["data"] = dataclasses.replace(ev.data[name])
    if ev.limit is not None:
        opts["limit"] = ev.limit
    if ev.max_new_tokens is not None:
        opts["max_new_tokens"] = ev.max_new_tokens
    if benchmark_class(name).takes_judges:
        opts["judges"] = list(ev.judges or protocol.judges)
        opts["judge_options"] = ev.judge_options
        if ev.trigger:
            opts["trigger"] = ev.trigger
    opts.update(ev.options.get(name, {}))
    return opts


def build_benchmarks(protocol: Protocol, ev: EvalConfig) -> list[Benchmark]:
    if not ev.benchmarks:
        raise BnrError("eval.benchmarks is empty; name at least one (e.g. harmful,over-refusal,gsm8k)")
    unused = set(ev.data) | set(ev.options)
    if unused - set(ev.benchmarks):
        raise BnrError(
            f"eval.data/eval.options name benchmark(s) {sorted(unused - set(ev.benchmarks))} "
            f"that are not in eval.benchmarks ({', '.join(ev.benchmarks)})"
        )
    return [make_benchmark(name, **benchmark_options(name, protocol, ev)) for name in ev.benchmarks]
