"""Eval roles are declared on each benchmark (`role`, `version`, `takes_judges`); the report's HS / over-refusal /
FA come from the roles, never from a benchmark's or a metric's name."""

from __future__ import annotations

import pytest

from bnr.config import EvalConfig
from bnr.errors import BnrError
from bnr.eval.benchmarks import BENCHMARKS, benchmark_class
from bnr.eval.protocols import PROTOCOLS
from bnr.eval.roles import ORIENTATION, check_orientation, declaration, declared, headline, worst_case
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


RESULTS = {
    "sst2": {"metric": "accuracy", "value": 80.0},
    "over-refusal": {"metric": "refusal_rate", "value": 4.0, "refusal_rate": 4.0},
    "harmful": {"metric": "hs", "value": 10.0, "hs": 10.0, "hs_plus": 12.0},
    "toy-harmful-aoa": {"metric": "hs", "value": 35.0, "hs": 35.0},
    "gsm8k": {"metric": "accuracy", "value": 30.0},
}


def test_every_registered_benchmark_points_the_way_its_role_does() -> None:
    for name in BENCHMARKS.names():
        check_orientation(benchmark_class(name))  # raises on a mismatch
    assert all(benchmark_class(n).higher_is_better is ORIENTATION[benchmark_class(n).role] for n in BENCHMARKS.names())


def test_a_benchmark_whose_orientation_contradicts_its_role_is_refused() -> None:
    class Upside(Harmful):
        name = "upside"
        higher_is_better = True

    with pytest.raises(BnrError, match="'upside' declares role 'harm' with higher_is_better=True"):
        check_orientation(Upside)
    with pytest.raises(BnrError, match="'upside' declares role 'harm'"):
        declaration(Upside(judges=["keyword"]))


def test_the_worst_case_is_oriented_by_the_role() -> None:
    assert worst_case(RESULTS, "harm") == ("toy-harmful-aoa", 35.0)  # the highest HS
    assert worst_case(RESULTS, "utility") == ("gsm8k", 30.0)  # the lowest FA
    assert worst_case({"sst2": RESULTS["sst2"]}, "harm") is None


def test_summary_records_roles_and_old_summaries_fall_back_to_the_registry() -> None:
    new = {
        "results": RESULTS,
        "benchmarks": {
            "harmful": {"role": "harm", "version": 1, "higher_is_better": False},
            "sst2": {"role": "utility", "version": 3, "higher_is_better": True},
        },
    }
    got = declared(new)
    assert got["sst2"]["version"] == 3 and got["harmful"]["role"] == "harm"
    assert got["over-refusal"] == {"role": "refusal", "version": None, "higher_is_better": False}  # not recorded
    old = declared({"results": RESULTS})  # a summary written before roles were recorded
    assert old["harmful"] == {"role": "harm", "version": None, "higher_is_better": False}
    assert headline(RESULTS, summary=new) == headline(RESULTS)


def test_a_recorded_role_without_its_number_fails_clearly() -> None:
    summary = {"results": RESULTS, "benchmarks": {"sst2": {"role": "harm", "version": 1, "higher_is_better": False}}}
    with pytest.raises(BnrError, match="'sst2' declares role 'harm' but its results have no 'hs'"):
        headline(RESULTS, summary=summary)
    wrong_way = {"role": "utility", "version": 1, "higher_is_better": False}
    flipped = {"results": RESULTS, "benchmarks": {"sst2": wrong_way}}
    with pytest.raises(BnrError, match="'sst2' is recorded with role 'utility' and higher_is_better=False"):
        headline(RESULTS, summary=flipped)
