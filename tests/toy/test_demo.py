"""A reduced `bnr demo` (one seed, p = 0.1, scale 0.5) on the real pipeline: the paper's ordering on a fixed seed.

Uses the cached toy base ($BNR_CACHE or ~/.cache/bnr; built once, about a minute on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.cli import main


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("demo")
    rc = main(["demo", "--config", "toy-quick", f"out={out}"])
    assert rc == 0
    return json.loads((Path(out) / "results.json").read_text())


def _row(results: dict, method: str) -> dict:
    return next(r for r in results["rows"] if r["method"] == method)


def test_reduced_demo_shows_the_ordering_and_keeps_fa(demo_results):
    base, sft = _row(demo_results, "base"), _row(demo_results, "sft")
    buffer_only, bnr = _row(demo_results, "buffer-only"), _row(demo_results, "bnr")
    assert base["hs_mean"] <= 5
    assert sft["hs_mean"] > buffer_only["hs_mean"] >= bnr["hs_mean"]
    assert sft["hs_mean"] >= 50
    # BnR keeps fine-tune accuracy: no worse than the aligned base it started from
    assert bnr["fa_mean"] >= base["fa_mean"] - 2


def test_reduced_demo_writes_its_outputs(demo_results):
    out = Path(demo_results["runs"]["buffer"]).parent
    assert (out / "table.md").is_file() and (out / "demo.png").stat().st_size > 1000
    for row in demo_results["rows"]:
        assert {"method", "p", "hs_mean", "hs_std", "fa_mean", "fa_std", "seeds"} <= set(row)
    evals = out / "evals" / "base"
    assert (evals / "harmful.jsonl").is_file()
    first = json.loads((evals / "harmful.jsonl").read_text().splitlines()[0])
    assert {"prompt", "completion", "verdicts"} <= set(first)
