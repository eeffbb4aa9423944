"""The performance suite (benchmarks/run.py) runs end to end in its tiny smoke configuration and writes a JSON
of the documented shape. Timings are not asserted (they are machine noise at these sizes)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    run.main(["--smoke", "--out", str(out)])
    written = json.loads(out.read_text())
    return written


def test_schema_and_finite_ratios(report: dict) -> None:
    assert report["suite"] == "bnr-performance" and report["schema"] == 1 and report["smoke"] is True
    assert set(report["sections"]) == {"P1", "P2", "P3", "P4"}
    for key in ("cpu", "nproc", "torch_threads", "load_avg_start", "load_avg_end", "torch", "device"):
        assert key in report["machine"]
    ids = [f["id"] for f in report["figures"]]
    assert len(ids) == len(set(ids))
    for f in report["figures"]:
        assert set(f) == {"id", "of", "ratio", "target", "met", "seconds", "peak_mb", "detail"}
        assert math.isfinite(f["ratio"]) and f["ratio"] > 0, f["id"]
        assert f["met"] is None  # smoke numbers are never judged against targets
        assert all(math.isfinite(v) and v >= 0 for v in [*f["seconds"].values(), *f["peak_mb"].values()])


def test_every_figure_family_is_present(report: dict) -> None:
    ids = {f["id"] for f in report["figures"]}
    for want in (
        "P1.tiny.merged_vs_plain",
        "P1.tiny.separate_vs_plain",
        "P1.tiny.loop_vs_trainer",
        "P2.merge.speedup_measured",
        "P2.merge.speedup_all_layers",
        "P2.merge.max_rel_error",
        "P2.merge.deliverable_size",
        "P2.export.tiny",
        "P3.judge.keyword",
        "P3.judge.beaverdam-tiny",
        "P4.defense.none",
    ):
        assert want in ids
    assert any(i.startswith("P3.generate.batch") for i in ids)
    # every registered defense was either timed or reported as not runnable
    from bnr.defenses import DEFENSES

    base = next(f for f in report["figures"] if f["id"] == "P4.defense.none")
    timed = {i.removeprefix("P4.defense.") for i in ids if i.startswith("P4.defense.")}
    assert set(DEFENSES.names()) == timed | set(base["detail"].get("not_timed", {}))


def test_factor_merge_is_exact_even_in_smoke(report: dict) -> None:
    err = next(f for f in report["figures"] if f["id"] == "P2.merge.max_rel_error")
    assert err["ratio"] < 1e-5
