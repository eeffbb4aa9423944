"""PNG figures of a gradient-analysis report: per layer, conditions as line styles, data sets as colours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATA_COLORS = {"harmful": "#d62728", "harmless": "#1f77b4"}
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D"]
TYPE_ORDER = ["all", "q", "k", "v", "o", "gate", "up", "down"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _types(report: dict[str, Any]) -> list[str]:
    seen = {r["type"] for c in report["conditions"].values() for d in c["data"].values() for r in d["rows"]}
    return [t for t in TYPE_ORDER if t in seen] + sorted(seen - set(TYPE_ORDER))


def _series(report: dict[str, Any], kind: str, value: Any) -> list[tuple[str, str, list[int], list[float]]]:
    out = []
    for cond, c in report["conditions"].items():
        for data, d in c["data"].items():
            rows = sorted((r for r in d["rows"] if r["type"] == kind), key=lambda r: r["layer"])
            pts = [(r["layer"], value(r)) for r in rows if value(r) is not None]
            if pts:
                out.append((cond, data, [p[0] for p in pts], [p[1] for p in pts]))
    return out


def _panel_grid(report: dict[str, Any], metrics: list[tuple[str, Any]], title: str, path: Path) -> Path | None:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    types = _types(report)
    conds = list(report["conditions"])
    fig, axes = plt.subplots(
        len(metrics), len(types), figsize=(2.6 * len(types), 2.2 * len(metrics)), squeeze=False, sharex=True
    )
    drew = False
    for i, (label, value) in enumerate(metrics):
        for j, kind in enumerate(types):
            ax = axes[i][j]
            for cond, data, xs, ys in _series(report, kind, value):
                k = conds.index(cond) % len(LINESTYLES)
                ax.plot(
                    xs,
                    ys,
                    LINESTYLES[k],
                    marker=MARKERS[k],
                    ms=3,
                    lw=1.2,
                    color=DATA_COLORS.get(data, "gray"),
                    label=f"{cond} / {data}",
                )
                drew = True
            ax.axhline(0.0, color="black", lw=0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(kind if kind != "all" else "whole layer", fontsize=9)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == len(metrics) - 1:
                ax.set_xlabel("layer", fontsize=8)
    if not drew:
        plt.close(fig)
        return None
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_scores(report: dict[str, Any], direction: str, path: Path) -> Path | None:
    """S_l (top) and D_l (bottom) against the layer index, one column per module type."""
    sign = report["sign"]
    metrics = [(f"S ({sign})", lambda r: r["S"].get(direction)), ("D (damage)", lambda r: r["D"].get(direction))]
    return _panel_grid(report, metrics, f"Safety Gradient Score, direction '{direction}'", path)


def plot_grad_norms(report: dict[str, Any], path: Path) -> Path | None:
    """Mean per-sample ||grad_W|| (top) and, when probed, the fresh LoRA's ||grad_B|| (bottom)."""
    metrics: list[tuple[str, Any]] = [("||grad W||", lambda r: r["grad_norm"])]
    if report.get("probe_r"):
        metrics.append(("fresh LoRA ||grad B||", lambda r: r["lora_grad_norm"].get("probe.B")))
    return _panel_grid(report, metrics, "Per-sample gradient norms", path)


def plot_landscapes(report: dict[str, Any], path: Path) -> Path | None:
    """Contours of the 2-D loss slices, one panel per (condition, data set)."""
    cells = [
        (c, d, cd["landscape"])
        for c, cv in report["conditions"].items()
        for d, cd in cv["data"].items()
        if cd.get("landscape")
    ]
    if not cells:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(cells), figsize=(2.8 * len(cells), 2.6), squeeze=False)
    for ax, (cond, data, ls) in zip(axes[0], cells):
        cs = ax.contourf(ls["alphas"], ls["betas"], ls["loss"], levels=15, cmap="viridis")
        fig.colorbar(cs, ax=ax, fraction=0.046)
        ax.plot([0], [0], "r+")
        ax.set_title(f"{cond} / {data}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
