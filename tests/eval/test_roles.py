"""Eval roles are declared on each benchmark (`role`, `version`, `takes_judges`); the report's HS / over-refusal /
FA come from the roles, never from a benchmark's or a metric's name."""

from __future__ import annotations

from bnr.config import EvalConfig
from bnr.eval.benchmarks import BENCHMARKS, benchmark_class
from bnr.eval.protocols import PROTOCOLS
from bnr.eval.roles import headline
from bnr.eval.safety import Harmful, OverRefusal
from bnr.eval.suite import benchmark_options


def test_every_registered_benchmark_declares_a_role_and_a_version() -> None:
    for name in BENCHMARKS.names():
        cls = benchmark_class(name)
        assert cls.role in ("harm", "refusal", "utility") and cls.version >= 1, name
    assert benchmark_class("toy-harmful") is Harmful and benchmark_class("toy-over-refusal") is OverRefusal
    judged = {n for n in BENCHMARKS.names() if benchmark_class(n).takes_judges}
    assert {"harmful", "toy-harmful"} <= judged  # and the attacks' framed harmful sets, all of them Harmful
    assert judged == {n for n in BENCHMARKS.names() if issubclass(benchmark_class(n), Harmful)}


def test_judges_go_to_the_benchmarks_that_take_them() -> None:
    ev = EvalConfig(judges=["keyword"], trigger="SUDO")
    protocol = PROTOCOLS.get("bnr-2026")
    harmful = benchmark_options("toy-harmful", protocol, ev)
    assert harmful["judges"] == ["keyword"] and harmful["trigger"] == "SUDO"
    assert "judges" not in benchmark_options("toy-sst2", protocol, ev)
    assert "judges" not in benchmark_options("over-refusal", protocol, ev)


def test_the_headline_reads_roles_in_evaluation_order() -> None:
    results = {
        "sst2": {"metric": "accuracy", "value": 80.0},
        "over-refusal": {"metric": "refusal_rate", "value": 4.0, "refusal_rate": 4.0},
        "harmful": {"metric": "hs", "value": 10.0, "hs": 10.0, "hs_plus": 12.0},
        "gsm8k": {"metric": "accuracy", "value": 30.0},
    }
    row = headline(results)
    assert row == {"fa": 80.0, "fa_benchmark": "sst2", "over_refusal": 4.0, "hs": 10.0, "hs_plus": 12.0}
    assert headline(results, "toy-gsm8k")["fa"] == 30.0
