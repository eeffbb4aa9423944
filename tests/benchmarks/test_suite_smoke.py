"""The performance suite (benchmarks/run.py) runs end to end in its tiny smoke configuration and writes a JSON
of the documented shape. Timings are not asserted (they are machine noise at these sizes)."""

from __future__ import annotations

import json
import math
import os
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
    if len(os.sched_getaffinity(0)) >= 2:  # P4's defense rounds ran in the background, beside P1 at least
        p4 = report["sections"]["P4"]
        assert p4["background"] is True and report["sections"]["P1"]["beside_p4_rounds"]
        assert p4["wall_s"] >= p4["waited_s"] and p4["rounds_wall_s"] > 0
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
        "P4.defense.sft",
    ):
        assert want in ids
    assert any(i.startswith("P3.generate.batch") for i in ids)
    # every registered defense (each once, by its canonical name) was either timed or reported as not runnable
    from bnr.defenses import DEFENSES, canonical_name, get_defense

    base = next(f for f in report["figures"] if f["id"] == "P4.defense.sft")
    assert base["ratio"] == 1.0
    jobs = {i.removeprefix("P4.defense.") for i in ids if i.startswith("P4.defense.") and i.count(".") == 2}
    assert {canonical_name(n) for n in DEFENSES.names()} == jobs | set(base["detail"].get("not_timed", {}))
    # finalize and provider stages are figures of their own, for exactly the defenses that have them
    for name in jobs:
        assert (f"P4.defense.{name}.provider" in ids) == bool(get_defense(name).requires)
    assert "P4.defense.bnr.finalize" in ids and "P4.defense.sft.finalize" not in ids


def test_p4_prints_the_docs_defense_table_with_the_cost_column_filled(report: dict) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import p4_jobs
    finally:
        sys.path.remove(str(BENCH))
    table = report["defenses_table"]
    assert table == p4_jobs.defenses_table(report["figures"])
    lines = table.splitlines()
    docs = (BENCH.parent / "docs" / "defenses.md").read_text()
    assert lines[0] in docs and p4_jobs.COST_COLUMN in lines[0]  # the docs table's own header
    col = [c.strip() for c in lines[0].strip("|").split("|")].index(p4_jobs.COST_COLUMN)
    costs = {r.split("|")[1].strip(): r.split("|")[col + 1].strip() for r in lines[2:]}
    assert costs["`sft` (alias `none`)"] == "1.00x (the reference)"
    bnr = next(v for k, v in costs.items() if k.startswith("`bnr`"))
    assert "finalize" in bnr and "provider stages" in bnr and bnr.split("x")[0].replace(".", "").isdigit()


def test_factor_merge_is_exact_even_in_smoke(report: dict) -> None:
    err = next(f for f in report["figures"] if f["id"] == "P2.merge.max_rel_error")
    assert err["ratio"] < 1e-5
