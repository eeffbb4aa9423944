"""Sweep tables and the overview plot: aggregation over seeds, the base row, one record per (defense, n, p)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnr.eval.plots import plot_overview
from bnr.eval.tables import markdown_table, summary_records

ROWS = [
    {"defense": "base", "n": 10, "p": 0.1, "seed": 0, "hs": 2.0, "over_refusal": 0.0, "fa": 50.0},
    {"defense": "sft", "n": 10, "p": 0.1, "seed": 1, "hs": 80.0, "over_refusal": 0.0, "fa": 90.0},
    {"defense": "sft", "n": 10, "p": 0.1, "seed": 2, "hs": 100.0, "over_refusal": 2.0, "fa": 94.0},
    {"defense": "bnr", "n": 10, "p": 0.1, "seed": 1, "hs": 0.0, "over_refusal": 20.0, "fa": 88.0},
]


def test_summary_records_are_the_table_aggregate() -> None:
    recs = summary_records(ROWS)
    assert [r["defense"] for r in recs] == ["base", "sft", "bnr"]  # first-seen order, one per (defense, n, p)
    sft = recs[1]
    assert sft["hs_mean"] == 90.0 and sft["hs_std"] == pytest.approx(14.14, abs=0.01) and sft["seeds"] == [1, 2]
    assert recs[2]["over_refusal_std"] == 0.0  # one seed: std 0
    table = markdown_table(ROWS)
    assert table.index("| base |") < table.index("| sft |") < table.index("| bnr |")
    assert "90.0 \u00b1 14.1" in table


def test_overview_plot_draws_every_row(tmp_path: Path) -> None:
    path = plot_overview(ROWS, tmp_path / "overview.png", reference="base")
    assert path.stat().st_size > 1000
