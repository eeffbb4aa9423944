"""Sweep plots (matplotlib, Agg backend): HS, over-refusal and FA against the harmful ratio p, one line per defense."""

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


def plot_sweep(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write one PNG per metric present (mean with std error bars over seeds); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    written = []
    for key, _, _ in COLUMNS:
        series = _series(agg, key)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
        for label, (ps, means, stds) in series.items():
            ax.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.set_xlabel("harmful ratio p")
        ax.set_ylabel(TITLES[key])
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / FILES[key]
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


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
