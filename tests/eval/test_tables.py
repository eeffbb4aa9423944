"""Sweep tables and the overview plot: aggregation over seeds, the base row, one record per (defense, n, p)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_markdown_table_writes_each_cells_interval_beside_its_mean() -> None:
    intervals = {("sft", 10, 0.1, "hs"): (78.04, 99.96), ("base", 10, 0.1, "fa"): (40.0, 60.0)}
    table = markdown_table(ROWS, intervals)
    assert "| sft | 90.0 \u00b1 14.1 [78.0, 100.0] | 90.0 |" in table  # the average column gets none
    assert "| 50.0 [40.0, 60.0] |" in table and "[95% bootstrap CI over prompts and seeds]" in table
    assert "| bnr | 0.0 | 0.0 |" in table  # a cell without an interval: the mean alone
    assert "CI" not in markdown_table(ROWS)


def test_overview_plot_draws_every_row(tmp_path: Path) -> None:
    path = plot_overview(ROWS, tmp_path / "overview.png", reference="base")
    assert path.stat().st_size > 1000


def test_plots_share_colours_show_the_base_and_say_n_and_seeds(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from bnr.eval.plots import caption, colours, plot_sweep

    more = [*ROWS, {"defense": "sft", "n": 10, "p": 0.5, "seed": 1, "hs": 0.0, "over_refusal": 0.0, "fa": 0.0}]
    assert colours(more) == colours(ROWS) and len(set(colours(ROWS).values())) == 3  # one colour per defense
    assert caption(ROWS[1:]).startswith("n = 10; seeds 1, 2 (2)")
    seen: list[Any] = []
    real_savefig = plt.Figure.savefig

    def keep(fig: Any, *args: Any, **kwargs: Any) -> None:
        seen.append([ln.get_label() for ax in fig.axes for ln in ax.get_lines()])
        real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep  # type: ignore[method-assign]
    try:
        paths = plot_sweep(more, tmp_path, reference="base")
    finally:
        plt.Figure.savefig = real_savefig  # type: ignore[method-assign]
    assert [p.name for p in paths] == ["hs_vs_p.png", "over_refusal_vs_p.png", "fa_vs_p.png"]
    assert all("base" in labels for labels in seen)  # the base's dashed line in every panel
