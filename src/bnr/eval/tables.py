"""Sweep aggregation and tables: mean +- std over seeds, in the papers' HS / FA layout (over-refusal beside HS).

Input rows are one per finished cell: {defense, p, n, seed, hs, hs_plus, over_refusal, fa[, train_s]}. The std is the
sample standard deviation (ddof=1) over seeds; it is 0 for a single seed. Given each cell's bootstrap interval
(`bnr.eval.uncertainty.cell_intervals`), the Markdown table writes it beside the mean: `56.7 ± 10.7 [48.1, 65.0]`.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

# (row key, short label, direction) in table order: over-refusal sits right beside HS
COLUMNS: list[tuple[str, str, str]] = [
    ("hs", "HS", "\u2193"),
    ("over_refusal", "OR", "\u2193"),
    ("fa", "FA", "\u2191"),
    ("train_s", "user job s", ""),  # the user job's training wall time (cost), where the sweep recorded it
]


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    count: int

    def text(self, digits: int = 1) -> str:
        if math.isnan(self.mean):
            return "-"
        return f"{self.mean:.{digits}f} \u00b1 {self.std:.{digits}f}" if self.count > 1 else f"{self.mean:.{digits}f}"


def stat(values: list[float]) -> Stat:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return Stat(math.nan, math.nan, 0)
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, int, float], dict[str, Stat]]:
    """(defense, n, p) -> {metric: Stat over seeds}."""
    groups: dict[tuple[str, int, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["defense"], int(r["n"]), float(r["p"]))].append(r)
    keys = {k for r in rows for k in r if k not in ("defense", "n", "p", "seed", "cell")}
    return {g: {k: stat([r.get(k, math.nan) for r in rs]) for k in sorted(keys)} for g, rs in groups.items()}


def summary_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The aggregate as plain records, in first-seen order: {defense, n, p, <metric>_mean, <metric>_std, seeds}."""
    seeds: dict[tuple[str, int, float], list[Any]] = defaultdict(list)
    for r in rows:
        seeds[(r["defense"], int(r["n"]), float(r["p"]))].append(r.get("seed"))
    out = []
    for (d, n, p), stats in aggregate(rows).items():
        rec: dict[str, Any] = {"defense": d, "n": n, "p": p}
        for key, s in stats.items():
            rec[f"{key}_mean"] = None if math.isnan(s.mean) else round(s.mean, 2)
            rec[f"{key}_std"] = None if math.isnan(s.std) else round(s.std, 2)
        out.append({**rec, "seeds": seeds[(d, n, p)]})
    return out


def _layout(agg: dict[tuple[str, int, float], dict[str, Stat]]) -> tuple[list[str], list[int], list[float]]:
    defenses = list(dict.fromkeys(d for d, _, _ in agg))
    return defenses, sorted({n for _, n, _ in agg}), sorted({p for _, _, p in agg})


def _columns(agg: dict[tuple[str, int, float], dict[str, Stat]]) -> list[tuple[str, str, str]]:
    present = {k for stats in agg.values() for k, s in stats.items() if s.count}
    return [c for c in COLUMNS if c[0] in present]


def _avg(agg: dict[tuple[str, int, float], dict[str, Stat]], d: str, n: int, ps: list[float], key: str) -> str:
    means = [agg[(d, n, p)][key].mean for p in ps if (d, n, p) in agg and agg[(d, n, p)][key].count]
    return f"{statistics.fmean(means):.1f}" if means else "-"


def markdown_table(
    rows: list[dict[str, Any]], intervals: dict[tuple[str, int, float, str], tuple[float, float]] | None = None
) -> str:
    """One Markdown table per n: rows = defenses, column blocks HS | OR | FA over p, each with an average.
    `intervals`: (defense, n, p, metric) -> the 95% bootstrap interval written after the cell's mean +- std."""
    agg = aggregate(rows)
    defenses, ns, ps = _layout(agg)
    cols = _columns(agg)
    ci = " [95% bootstrap CI over prompts and seeds]" if intervals else ""
    out = []
    for n in ns:
        head = ["Defense"]
        for _, lab, arrow in cols:
            head += [f"{lab}{arrow} p={p:g}" for p in ps] + [f"{lab} avg"]
        lines = [
            f"**n = {n}** (mean \u00b1 std over seeds{ci}; HS / OR / FA in %)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" + "---:|" * (len(head) - 1),
        ]
        for d in defenses:
            cells = [d]
            for key, _, _ in cols:
                cells += [_cell(agg, (d, n, p), key, intervals or {}) for p in ps]
                cells.append(_avg(agg, d, n, ps, key))
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _cell(
    agg: dict[tuple[str, int, float], dict[str, Stat]],
    group: tuple[str, int, float],
    key: str,
    intervals: dict[tuple[str, int, float, str], tuple[float, float]],
) -> str:
    if group not in agg:
        return "-"
    text = agg[group][key].text()
    bounds = intervals.get((*group, key))
    return f"{text} [{bounds[0]:.1f}, {bounds[1]:.1f}]" if bounds and text != "-" else text


def _tex(s: str) -> str:
    return s.replace("\u00b1", "$\\pm$").replace("_", "\\_").replace("%", "\\%")


def latex_table(rows: list[dict[str, Any]]) -> str:
    """The same layout as booktabs LaTeX (one tabular per n), ready for \\input{}."""
    agg = aggregate(rows)
    defenses, ns, ps = _layout(agg)
    cols = _columns(agg)
    width = len(ps) + 1
    arrows = {"\u2193": "$\\downarrow$", "\u2191": "$\\uparrow$", "": ""}
    out = []
    for n in ns:
        spec = "l" + ("|" + "c" * width) * len(cols)
        group = " & ".join(f"\\multicolumn{{{width}}}{{c}}{{{lab} {arrows[a]}}}" for _, lab, a in cols)
        sub = " & ".join(" & ".join([*(f"p={p:g}" for p in ps), "Avg"]) for _ in cols)
        lines = [
            f"% n = {n}; mean $\\pm$ std over seeds, in %",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            f"Defense & {group} \\\\",
            f" & {sub} \\\\",
            "\\midrule",
        ]
        for d in defenses:
            cells = [_tex(d)]
            for key, _, _ in cols:
                cells += [_tex(agg[(d, n, p)][key].text()) if (d, n, p) in agg else "-" for p in ps]
                cells.append(_avg(agg, d, n, ps, key))
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
