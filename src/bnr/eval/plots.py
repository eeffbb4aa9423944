"""Plots (matplotlib, Agg backend): sweep plots of HS, over-refusal and FA against the harmful ratio p, one line per
defense; the sweep's overview (grouped bars of the three metrics per p, the base model as a dashed line); the
calibration search's Pareto plot (HS vs over-refusal, FA as colour) and the attack search's curve.

Each plot is built by a `*_figure` function that returns the matplotlib Figure (what the tests read: limits,
legend, colours) and written by its `plot_*` function. Callers pass `styles`, each row label's (prose name,
colour): the sweep and the attack search give every defense its prose name and one fixed colour
(`bnr.defenses.base.defense_style`), so a method looks the same in every plot; variants of one method (other
merge scales, ...) share its colour and differ in line style or hatch. Every sweep plot shows zeros above the
axis, the base model in each panel and a caption with n and the seeds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bnr.eval.tables import COLUMNS, aggregate

log = logging.getLogger(__name__)

TITLES = {
    "hs": "Harmful score (%)",
    "over_refusal": "Over-refusal on benign prompts (%)",
    "fa": "Fine-tune accuracy (%)",
}
FILES = {"hs": "hs_vs_p.png", "over_refusal": "over_refusal_vs_p.png", "fa": "fa_vs_p.png"}
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")
HATCHES = ("", "//", "..", "xx")
Style = tuple[str, str]  # (the name in the legend, the colour) of one row label


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colours(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One colour per row label (defense) when no styles are given: labels in sorted order on tab10."""
    import matplotlib

    palette = [matplotlib.colormaps["tab10"](i) for i in range(10)]
    return {d: palette[i % len(palette)] for i, d in enumerate(sorted({str(r["defense"]) for r in rows}))}


def styles_of(rows: list[dict[str, Any]], styles: dict[str, Style] | None) -> dict[str, tuple[str, Any, int]]:
    """Each row label's (legend name, colour, variant): `styles` where given, else the label on `colours`; the
    variant counts the labels before it with the same colour (0, 1, ...), for line styles and hatches."""
    fallback = colours(rows)
    out: dict[str, tuple[str, Any, int]] = {}
    for label in dict.fromkeys(str(r["defense"]) for r in rows):
        name, colour = (styles or {}).get(label) or (label, fallback[label])
        variant = sum(1 for _, c, _ in out.values() if c == colour)
        out[label] = (name, colour, variant)
    return out


def caption(rows: list[dict[str, Any]]) -> str:
    """What a sweep plot shows: n, the seeds, the statistic."""
    ns = sorted({int(r["n"]) for r in rows if r.get("n") is not None})
    seeds = list(dict.fromkeys(r.get("seed") for r in rows if r.get("seed") is not None))
    return (
        f"n = {', '.join(map(str, ns))}; seeds {', '.join(map(str, seeds))} ({len(seeds)}); mean \u00b1 std over "
        "seeds (sweep folder: uncertainty.md has bootstrap intervals)"
    )


def _legend_name(style: dict[str, tuple[str, Any, int]], label: str) -> str:
    """A series label (`bnr`, or `bnr (n=100)` when n varies) with its defense's prose name."""
    base, _, n = label.partition(" (n=")
    name = style[base][0] if base in style else base
    return f"{name} (n={n}" if n else name


def sweep_figures(
    rows: list[dict[str, Any]], reference: str | None = None, styles: dict[str, Style] | None = None
) -> dict[str, Any]:
    """metric -> Figure: its mean against p per defense, std error bars over seeds; rows labelled `reference` (the
    base model) a dashed black line in every panel."""
    plt = _pyplot()
    agg = aggregate([r for r in rows if r["defense"] != reference])
    ref = aggregate([r for r in rows if r["defense"] == reference])
    style = styles_of(rows, styles)
    figures = {}
    for key, _, _ in COLUMNS:
        series = _series(agg, key) if key in FILES else {}  # percentages only (not the cost column)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.8), dpi=120)
        for label, (ps, means, stds) in series.items():
            _, colour, variant = style[label.split(" (n=")[0]]
            ax.errorbar(
                ps,
                means,
                yerr=stds,
                marker=MARKERS[variant % len(MARKERS)],
                ls=LINESTYLES[variant % len(LINESTYLES)],
                capsize=3,
                label=_legend_name(style, label),
                color=colour,
            )
        base = [s[key].mean for s in ref.values() if key in s and s[key].count]
        if base:
            ax.axhline(base[0], color="k", ls="--", lw=1, label=_legend_name(style, str(reference)))
        ax.set_xlabel("harmful ratio p")
        ax.set_ylabel(TITLES[key])
        ax.set_ylim(-3, 103)  # a zero sits visibly above the axis
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.text(0.01, 0.01, caption(rows), fontsize=6)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        figures[key] = fig
    return figures


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def plot_sweep(
    rows: list[dict[str, Any]], out_dir: Path, reference: str | None = None, styles: dict[str, Style] | None = None
) -> list[Path]:
    """Write `sweep_figures` as one PNG per metric present; return their paths."""
    return [_save(fig, out_dir / FILES[key]) for key, fig in sweep_figures(rows, reference, styles).items()]


def _series(agg: dict[tuple[str, int, float], dict[str, Any]], key: str) -> dict[str, tuple[list[float], ...]]:
    ns = {n for _, n, _ in agg}
    out: dict[str, tuple[list[float], ...]] = {}
    for d, n, p in sorted(agg, key=lambda k: (k[0], k[1], k[2])):
        s = agg[(d, n, p)].get(key)
        if s is None or not s.count:
            continue
        label = d if len(ns) == 1 else f"{d} (n={n})"
        ps, means, stds = out.setdefault(label, ([], [], []))
        ps.append(p)
        means.append(s.mean)
        stds.append(s.std)
    return out


def overview_figure(
    rows: list[dict[str, Any]], reference: str | None = None, styles: dict[str, Style] | None = None
) -> Any:
    """HS, over-refusal and FA side by side: per p, one bar per row label (mean, std error bars over seeds; a
    measured zero marked on the axis); rows labelled `reference` (the base model) a dashed line in each panel."""
    plt = _pyplot()
    agg = aggregate(rows)
    ns = {n for _, n, _ in agg}
    label = {key: key[0] if len(ns) == 1 else f"{key[0]} (n={key[1]})" for key in agg}
    ps = sorted({p for _, _, p in agg})
    series = list(dict.fromkeys(label[k] for k in agg if k[0] != reference))
    panels = [c for c in COLUMNS if c[0] in FILES]  # the percentages (not the cost column)
    style = styles_of(rows, styles)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), dpi=80)
    width = 0.8 / max(1, len(series))
    for ax, (key, _, _) in zip(axes, panels):
        for i, name in enumerate(series):
            stats = [
                next((agg[k][key] for k in agg if label[k] == name and k[2] == p and key in agg[k]), None) for p in ps
            ]
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(ps))]
            means = [s.mean if s and s.count else 0.0 for s in stats]
            stds = [s.std if s and s.count else 0.0 for s in stats]
            _, c, variant = style[name.split(" (n=")[0]]
            hatch = HATCHES[variant % len(HATCHES)]
            ax.bar(xs, means, width, yerr=stds, label=_legend_name(style, name), capsize=2, color=c, hatch=hatch)
            zeros = [x for x, m, s in zip(xs, means, stats) if s and s.count and m == 0]
            ax.plot(zeros, [0.0] * len(zeros), ls="", marker="_", ms=12, mew=2, color=c)  # a measured zero shows
        base = [agg[k][key].mean for k in agg if k[0] == reference and key in agg[k] and agg[k][key].count]
        if base:
            ax.axhline(base[0], color="k", ls="--", lw=1, label=_legend_name(style, str(reference)))
        ax.set_xticks(range(len(ps)), [f"p = {p:g}" for p in ps])
        ax.set_ylim(-3, 105)
        ax.set_title(TITLES[key], fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.text(0.01, 0.005, caption([r for r in rows if r["defense"] != reference]), fontsize=7)
    fig.tight_layout(rect=(0, 0.1 + 0.045 * ((len(labels) - 1) // 4), 1, 1))
    return fig


def plot_overview(
    rows: list[dict[str, Any]], path: Path, reference: str | None = None, styles: dict[str, Style] | None = None
) -> Path:
    """Write `overview_figure` to `path`."""
    return _save(overview_figure(rows, reference, styles), path)


def zoomed(values: list[float], low: float = -3.0, high: float = 103.0) -> tuple[float, float]:
    """Axis limits around `values` (percentages): their range with a margin of 8% of it (at least 2 points), kept
    within [`low`, `high`], so a zero stays visible above the axis and a cluster of points is not a dot."""
    lo, hi = min(values), max(values)
    pad = max(2.0, 0.08 * (hi - lo))
    return max(low, lo - pad), min(high, hi + pad)


def calibration_figure(rows: list[dict[str, Any]], refs: dict[str, dict[str, Any]], caption: str = "") -> Any:
    """HS (x) against over-refusal (y) of every searched merge, FA as colour; the Pareto front is outlined, the
    chosen point starred, and the references (aligned base, unmerged UserLoRA, the paper's merge) marked. The axes
    are zoomed to the points (`zoomed`); `caption` (n and the seed) is written under it."""
    import matplotlib

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    everything = [*rows, *refs.values()]
    screened = [r for r in rows if r.get("stage") == "screen"]
    if screened:
        ax.scatter(
            [r["hs"] for r in screened],
            [r["over_refusal"] for r in screened],
            c="lightgray",
            s=12,
            label="screened out (screening scores)",
        )
    rows = [r for r in rows if r.get("stage") != "screen"]
    fas = [r["fa"] for r in [*rows, *refs.values()]]
    norm = matplotlib.colors.Normalize(vmin=min(fas), vmax=max(fas))
    sc = ax.scatter(
        [r["hs"] for r in rows],
        [r["over_refusal"] for r in rows],
        c=[r["fa"] for r in rows],
        cmap="viridis",
        norm=norm,
        s=28,
        alpha=0.85,
        label="searched merges",
    )
    front = [r for r in rows if r.get("pareto")]
    ax.scatter(
        [r["hs"] for r in front],
        [r["over_refusal"] for r in front],
        facecolors="none",
        edgecolors="black",
        s=70,
        linewidths=0.8,
        label="Pareto front",
    )
    for r in rows:
        if r.get("chosen"):
            ax.scatter(
                [r["hs"]],
                [r["over_refusal"]],
                marker="*",
                s=260,
                c=[r["fa"]],
                cmap="viridis",
                norm=norm,
                edgecolors="red",
                linewidths=1.2,
                label="chosen",
            )
    for (key, ref), marker in zip(refs.items(), ("^", "D", "s")):
        ax.scatter(
            [ref["hs"]],
            [ref["over_refusal"]],
            marker=marker,
            s=70,
            c=[ref["fa"]],
            cmap="viridis",
            norm=norm,
            edgecolors="gray",
            label=ref.get("label", key),
        )
    fig.colorbar(sc, ax=ax, label="FA (%) on the held-out user slice")
    ax.set_xlabel("HS on calibration harmful prompts (%)")
    ax.set_ylabel("over-refusal on the calibration benign prompts (%)")
    ax.set_xlim(*zoomed([r["hs"] for r in everything]))
    ax.set_ylim(*zoomed([r["over_refusal"] for r in everything]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=6)
    fig.tight_layout(rect=(0, 0.04 if caption else 0, 1, 1))
    return fig


def plot_calibration(
    rows: list[dict[str, Any]], refs: dict[str, dict[str, Any]], path: Path, caption: str = ""
) -> Path:
    """Write `calibration_figure` to `path`."""
    return _save(calibration_figure(rows, refs, caption), path)


def search_figure(
    rows: dict[str, list[dict[str, Any]]],
    objective: str,
    styles: dict[str, Style] | None = None,
    caption: str = "",
) -> Any:
    """`bnr attack-search`: each trial's objective (dots) and the best so far (line) per defense, by trial, each
    defense under its prose name and colour (`styles`)."""
    plt = _pyplot()
    style = styles_of([{"defense": d} for d in rows], styles)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for defense, trials in rows.items():
        name, colour, variant = style[defense]
        ordered = sorted(trials, key=lambda r: r["trial"])
        xs = list(range(1, len(ordered) + 1))
        values = [float(r["objective"]) for r in ordered]
        best = [max(values[: i + 1]) for i in range(len(values))]
        ls = LINESTYLES[variant % len(LINESTYLES)]
        ax.plot(xs, best, ls=ls, color=colour, label=f"{name} (best so far)")
        ax.scatter(xs, values, color=colour, s=14, alpha=0.6)
    ax.set_xlabel("user jobs (trials)")
    ax.set_ylabel(f"{objective} (%)")
    ax.set_ylim(-3, 103)  # a zero sits visibly above the axis
    ax.set_title("adaptive attacker: search curve")
    ax.legend(fontsize=8)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=6)
    fig.tight_layout(rect=(0, 0.04 if caption else 0, 1, 1))
    return fig


def plot_search_curve(
    rows: dict[str, list[dict[str, Any]]],
    path: Path,
    objective: str,
    styles: dict[str, Style] | None = None,
    caption: str = "",
) -> Path:
    """Write `search_figure` to `path`."""
    out = _save(search_figure(rows, objective, styles, caption), path)
    log.info("wrote %s", path)
    return out
