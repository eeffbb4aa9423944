"""The plots' figures on toy rows: prose names in legends, one colour per method in every plot, zeros above the
axis, the base in every panel, captions with n and seeds, and the calibration plot zoomed to its points."""

from __future__ import annotations

from typing import Any

import matplotlib.colors as mcolors

from bnr.defenses.base import defense_style
from bnr.eval.plots import calibration_figure, overview_figure, search_figure, sweep_figures
from bnr.orchestrate.grid import Cell
from bnr.recipes.sweep import BASE_LABEL, plot_styles

CELLS = [
    Cell("sft", 0.1, 10, 1),
    Cell("bnr", 0.1, 10, 1, (("merge.scale", 0.5),)),
    Cell("bnr", 0.1, 10, 1, (("merge.scale", 1.0),)),
]


def _rows() -> list[dict[str, Any]]:
    rows = [{"defense": BASE_LABEL, "n": 10, "p": 0.1, "seed": 1, "hs": 5.0, "over_refusal": 2.0, "fa": 60.0}]
    for seed in (1, 2):
        rows += [
            {"defense": CELLS[0].label, "n": 10, "p": 0.1, "seed": seed, "hs": 90.0, "over_refusal": 0.0, "fa": 88.0},
            {"defense": CELLS[1].label, "n": 10, "p": 0.1, "seed": seed, "hs": 0.0, "over_refusal": 4.0, "fa": 70.0},
            {"defense": CELLS[2].label, "n": 10, "p": 0.1, "seed": seed, "hs": 0.0, "over_refusal": 8.0, "fa": 65.0},
        ]
    return rows


def _rgba(c: Any) -> tuple[float, ...]:
    return tuple(round(x, 4) for x in mcolors.to_rgba(c))


def test_sweep_and_overview_plots_name_methods_in_prose_with_one_colour_each() -> None:
    import matplotlib.pyplot as plt

    styles = plot_styles(CELLS)
    sft, bnr = defense_style("sft"), defense_style("bnr")
    assert styles[CELLS[0].label] == sft and sft[0] == "SFT (no defense)"
    assert styles[CELLS[1].label] == ("Buffer-and-Reinforce merge.scale=0.5", bnr[1])
    names = ["Buffer-and-Reinforce merge.scale=0.5", "Buffer-and-Reinforce merge.scale=1", "SFT (no defense)"]
    figures = sweep_figures(_rows(), reference=BASE_LABEL, styles=styles)
    assert list(figures) == ["hs", "over_refusal", "fa"]
    for fig in [*figures.values(), overview := overview_figure(_rows(), reference=BASE_LABEL, styles=styles)]:
        assert "n = 10; seeds 1, 2 (2)" in " ".join(t.get_text() for t in fig.texts)  # the caption
    for fig in figures.values():
        (ax,) = fig.axes
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sorted(legend) == sorted([*names, BASE_LABEL]), legend  # prose names, the base in every panel
        lines = {c.get_label(): c for c in ax.containers}  # an errorbar per method
        assert _rgba(lines["SFT (no defense)"][0].get_color()) == _rgba(sft[1])
        scale_half, scale_one = lines[names[0]][0], lines[names[1]][0]
        assert _rgba(scale_half.get_color()) == _rgba(scale_one.get_color()) == _rgba(bnr[1])  # one colour...
        assert scale_half.get_linestyle() != scale_one.get_linestyle()  # ...its variants told apart by style
        low, high = ax.get_ylim()
        assert low < 0 < 100 < high  # a zero (bnr's HS) sits above the axis
    for ax in overview.axes:  # the bars: the same colour per method; the base a dashed line in each panel
        bars = {c.get_label(): c for c in ax.containers if hasattr(c, "patches")}
        assert _rgba(bars["SFT (no defense)"].patches[0].get_facecolor()) == _rgba(sft[1])
        assert _rgba(bars[names[0]].patches[0].get_facecolor()) == _rgba(bnr[1])
        assert [ln.get_label() for ln in ax.get_lines() if ln.get_linestyle() == "--"] == [BASE_LABEL]
        assert ax.get_ylim()[0] < 0
    plt.close("all")


def test_the_calibration_plot_is_zoomed_to_its_points_and_says_n_and_seed() -> None:
    rows = [
        {"hs": 0.0, "over_refusal": 1.0, "fa": 70.0, "stage": "full", "pareto": True, "chosen": True},
        {"hs": 6.0, "over_refusal": 3.0, "fa": 72.0, "stage": "full"},
        {"hs": 10.0, "over_refusal": 0.0, "fa": 75.0, "stage": "screen"},
    ]
    refs = {"base": {"hs": 4.0, "over_refusal": 2.0, "fa": 60.0, "label": "aligned base"}}
    fig = calibration_figure(rows, refs, "n = harmful 40, benign 40 prompts; seed 42")
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert -3 <= x0 < 0 and 10 < x1 < 15  # the data's range (0-10), a zero visible, not 0-100
    assert -3 <= y0 < 0 and 3 < y1 < 6
    assert "aligned base" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "seed 42" in " ".join(t.get_text() for t in fig.texts)


def test_the_attack_search_curve_names_defenses_in_prose_in_their_colours() -> None:
    rows = {
        "sft": [{"trial": 0, "objective": 40.0}, {"trial": 1, "objective": 0.0}],
        "bnr": [{"trial": 0, "objective": 0.0}],
    }
    styles = {d: defense_style(d) for d in rows}
    fig = search_figure(rows, "hs", styles, "n = 2 user jobs per defense; TPE seed 0, run seed 42")
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"SFT (no defense) (best so far)", "Buffer-and-Reinforce (best so far)"}
    assert _rgba(lines["Buffer-and-Reinforce (best so far)"].get_color()) == _rgba(styles["bnr"][1])
    assert ax.get_ylim()[0] < 0 and "n = 2 user jobs" in fig.texts[0].get_text()


def test_every_defense_has_a_prose_name_and_its_own_colour() -> None:
    from bnr.defenses import DEFENSES
    from bnr.defenses.base import canonical_name

    canon = sorted({canonical_name(n) for n in DEFENSES.names()})
    assert len({_rgba(defense_style(n)[1]) for n in canon}) == len(canon)  # no two built-in defenses share one
    for name in canon:
        title = defense_style(name)[0]
        assert title and title != name and " (" not in title.replace(" (no defense)", "").replace(" (full scale)", "")
