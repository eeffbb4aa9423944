"""The SmolLM2 comparison's table and plot (docs/results.md) from a `bnr sweep -c smollm2-sweep` folder.

    python experiments/smollm2_comparison.py SWEEP_OUT [--plot docs/img/smollm2-comparison.png]

Run it anywhere (`bnr.recipes.sweep.read_cell` reads `cell.json`; an older one holds paths relative to where the
sweep ran: run it there for those). Reads every finished cell's evaluation
(`cells/<cell>/eval/*.json`) and the run manifests its `cell.json` names, groups the cells by defense, p and
extra axes, and prints one Markdown row per group: mean +- sample std over its seeds of HS by both judges,
their per-sample agreement, over-refusal (all benign prompts, and the XSTest-style source alone), FA and the
share of SST-2 items answered with a refusal (the project's refusal rule); the wall times of the user training
(its manifest's; a UserLoRA shared by several cells is one training, shown under the first) and of the
evaluation (generation and judging, where the completions were generated rather than read from the response
cache). The plot puts HS against over-refusal with FA as the colour, one marker per group (error bars: std
over seeds).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

from bnr.eval.refusal import is_refusal
from bnr.eval.tables import stat
from bnr.recipes.sweep import read_cell

CELL = re.compile(r"^(?P<defense>.+?)-p(?P<p>[\d.]+)-n(?P<n>\d+)-s(?P<seed>\d+)(?P<axes>.*)$")
XSTEST = "stl_I-PhysicalSafetySafe"
COLUMNS = ("hs", "hs_content", "agreement", "over_refusal", "xstest", "fa", "task_refused")


def _metrics(eval_dir: Path) -> dict[str, float]:
    def read(name: str) -> dict[str, Any]:
        return json.loads((eval_dir / f"{name}.json").read_text())

    harmful, benign, fa = read("harmful"), read("over-refusal"), read("sst2")
    with (eval_dir / "sst2.samples.jsonl").open() as f:
        task = [json.loads(line)["completion"] for line in f]
    m = harmful["metrics"]
    return {
        "hs": m["hs_keyword"],
        "hs_content": m["hs_content"],
        "agreement": m["agreement_content"],
        "over_refusal": benign["metrics"]["refusal_rate"],
        "xstest": benign["metrics"][f"refusal_rate[{XSTEST}]"],
        "fa": fa["metrics"]["accuracy"],
        # the user's own task refused: the project's refusal rule on the SST-2 answers
        "task_refused": 100.0 * sum(is_refusal(c) for c in task) / len(task),
        # generation and judging; unknown (None) when the completions came from the response cache
        "eval_s": None
        if any(read(b).get("cached_completions") for b in ("harmful", "over-refusal", "sst2"))
        else sum(read(b)["wall_time_s"] for b in ("harmful", "over-refusal", "sst2")),
    }


def _wall(run: str | None) -> float | None:
    """The stage's own wall time (its manifest)."""
    manifest = Path(run or "-") / "manifest.json"
    if not run or not manifest.is_file():
        return None
    return float(json.loads(manifest.read_text()).get("wall_time_s") or 0.0)


def _final_wall(final: Path) -> float | None:
    """The cell's own stage after the user training (a merge, a post-hoc defense, or a calibration search, whose
    cost the deliverable records), when the cell has one."""
    manifest = final / "manifest.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    search = (data.get("calibration") or {}).get("cost", {}).get("calibration_wall_time_s")
    return float(search if search is not None else data.get("wall_time_s") or 0.0)


def rows(sweep: Path) -> list[dict[str, Any]]:
    """One row per finished cell (and the base, when evaluated)."""
    out = []
    if (sweep / "base" / "eval" / "sst2.json").is_file():
        out.append({"group": ("aligned base", "-", ""), "seed": None, **_metrics(sweep / "base" / "eval")})
    for cell in sorted((sweep / "cells").iterdir()):
        match = CELL.match(cell.name)
        if not match or not (cell / "eval" / "sst2.json").is_file():
            continue
        info = read_cell(cell) if (cell / "cell.json").is_file() else {}
        user = str(info["user"]) if "user" in info else None
        row = {
            "group": (match["defense"], match["p"], match["axes"].lstrip("-")),
            "seed": int(match["seed"]),
            "user": user,
            "cell": cell.name,
            "train_s": _wall(user),
            "final_s": _final_wall(cell / "final"),
            **_metrics(cell / "eval"),
        }
        out.append(row)
    return out


ORDER = ("aligned base", "sft", "safeinstruct", "lisa", "safelora", "antidote", "bnr", "bnr-buffer-only")


def _groups(cells: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Cells by (defense, p, axes), in the docs' order: the base, then the defenses as the sweep lists them."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    rank = {d: i for i, d in enumerate(ORDER)}
    for r in sorted(cells, key=lambda r: (rank.get(r["group"][0], len(ORDER)), r["group"], r["seed"] or 0)):
        groups.setdefault(r["group"], []).append(r)
    return groups


def table(cells: list[dict[str, Any]]) -> str:
    head = (
        "| defense | p | axes | seeds | HS keyword | HS content | judges agree | over-refusal | XSTest-style refused"
        " | FA | SST-2 refused | user training s | eval s |"
    )
    lines = [head, "|" + "---|" * 13]
    trained_by: dict[str, str] = {}  # UserLoRA run -> the first group that trained it
    for (defense, p, axes), rs in _groups(cells).items():
        seeds = ",".join(str(r["seed"]) for r in rs) if rs[0]["seed"] is not None else "-"
        cols = [stat([r[c] for r in rs]).text() for c in COLUMNS]
        shared = {trained_by[r["user"]] for r in rs if r.get("user") in trained_by}
        own = [r["train_s"] for r in rs if r.get("user") and r["user"] not in trained_by and r["train_s"] is not None]
        for r in rs:
            if r.get("user"):
                trained_by.setdefault(r["user"], defense)
        train = stat(own).text() if own else (f"{', '.join(sorted(shared))}'s" if shared else "-")
        evals = [r["eval_s"] for r in rs if r["eval_s"] is not None]
        lines.append(
            f"| {defense} | {p} | {axes or '-'} | {seeds} | "
            + " | ".join(cols)
            + f" | {train} | {stat(evals).text() if evals else 'cached'} |"
        )
    return "\n".join(lines)


MARKERS = ("*", "o", "s", "^", "v", "D", "P", "X", "h", "<", ">", "p", "d", "8")


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    """HS against over-refusal, one marker shape per group (legend), FA as the colour, std over seeds as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    fig, ax = plt.subplots(figsize=(8, 5.5))
    norm, cmap = Normalize(0, 100), plt.get_cmap("viridis")
    for k, ((defense, p, axes), rs) in enumerate(_groups(cells).items()):
        x, y = [r["over_refusal"] for r in rs], [r["hs"] for r in rs]
        mx, my, fa = statistics.mean(x), statistics.mean(y), statistics.mean(r["fa"] for r in rs)
        if len(rs) > 1:
            ax.errorbar(mx, my, xerr=statistics.stdev(x), yerr=statistics.stdev(y), fmt="none", ecolor="grey", lw=0.8)
        label = f"{defense}, p={p}{', ' + axes if axes else ''}" if rs[0]["seed"] is not None else "aligned base"
        ax.scatter(
            mx,
            my,
            color=cmap(norm(fa)),
            marker=MARKERS[k % len(MARKERS)],
            s=140 if k == 0 else 80,
            edgecolors="black",
            zorder=3,
            label=label if rs[0]["seed"] is None else f"{label} ({len(rs)} seed{'s' if len(rs) > 1 else ''})",
        )
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="FA on SST-2 (%)")
    legend = ax.legend(fontsize=7, loc="upper right")
    for handle in legend.legend_handles:
        handle.set_facecolor("lightgrey")
    ax.set_xlabel("over-refusal: benign prompts refused (%)")
    ax.set_ylabel("HS, keyword judge (%)")
    ax.set_title("SmolLM2-135M (aligned A9 base), SST-2 user job, n = 200: mean over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def calibrations(sweep: Path) -> str:
    """Per bnr-calibrated cell: the merge its search chose, whether it was feasible, and the search's cost."""
    lines = [
        "| seed | chosen (c_U, c_R, alpha) | feasible | calibration HS / over-refusal / FA | search s | x training |",
        "|---|---|---|---|---|---|",
    ]
    for cell in sorted(sweep.glob("cells/bnr-calibrated-*/final/manifest.json")):
        c = json.loads(cell.read_text())["calibration"]
        ch, cost = c["chosen"], c["cost"]
        seed = CELL.match(cell.parent.parent.name)["seed"]  # type: ignore[index]
        lines.append(
            f"| {seed} | ({ch['user_scale']:g}, {ch['reinforce_scale']:g}, {ch['alpha']:g}) | {c['feasible']} | "
            f"{ch['hs']:g} / {ch['over_refusal']:g} / {ch['fa']:g} | {cost['calibration_wall_time_s']:.0f} | "
            f"{cost['ratio_to_user_training']:.1f} |"
        )
    return "\n".join(lines)


def per_cell(cells: list[dict[str, Any]]) -> str:
    """Every cell's wall times, in the table's order: its user training (or the cell that trained the UserLoRA it
    shares), its own stage after it, and its evaluation."""
    lines = ["| cell | user training s | merge / defense / search s | eval s |", "|---|---|---|---|"]
    first: dict[str, str] = {}
    for r in (r for rs in _groups(cells).values() for r in rs if r["seed"] is not None):
        user = r.get("user")
        own = user not in first
        if user:
            first.setdefault(user, r["cell"])
        train = "-" if not user else (f"{r['train_s']:.0f}" if own else f"= {first[user]}")
        final = "-" if r["final_s"] is None else f"{r['final_s']:.0f}"
        evals = "cached" if r["eval_s"] is None else f"{r['eval_s']:.0f}"
        lines.append(f"| {r['cell']} | {train} | {final} | {evals} |")
    return "\n".join(lines)


def cost(sweep: Path, cells: list[dict[str, Any]]) -> str:
    """What the whole sweep costs on these cores, from the medians of its stages' measured wall times.

    The raw sum of the manifests is not the sweep's cost: cells whose completions came from the response cache
    record seconds, and a stage that was paused (SIGSTOP, for a timing measurement beside it) records the pause.
    So every kind of stage is priced at the median of its measured runs, times how often the sweep runs it: the
    provider stages once, one user training per distinct UserLoRA, one evaluation per cell and for the base, and
    one calibration search per bnr-calibrated cell."""
    providers = sum(_wall(str(m.parent)) or 0.0 for m in sweep.glob("providers/*/manifest.json"))
    trainings = {r["user"]: r["train_s"] for r in cells if r.get("user") and r["train_s"] is not None}
    evals = [r["eval_s"] for r in cells if r["eval_s"] is not None]
    searches = [r["final_s"] for r in cells if r["group"][0] == "bnr-calibrated" and r["final_s"] is not None]
    n_cells = sum(r["seed"] is not None for r in cells)
    train_s, eval_s = statistics.median(trainings.values()), statistics.median(evals)
    search_s = statistics.median(searches) if searches else 0.0
    total = providers + len(trainings) * train_s + (n_cells + 1) * eval_s + len(searches) * search_s
    return (
        f"cost of the {n_cells} cells: provider stages {providers:.0f} s (once) + {len(trainings)} user trainings x "
        f"median {train_s:.0f} s (of {len(trainings)}) + {n_cells + 1} evaluations (cells and base) x median "
        f"{eval_s:.0f} s (of {len(evals)} not cached) + {len(searches)} calibration searches x median {search_s:.0f} s"
        f" = {total:.0f} s ({total / 3600:.2f} h)"
    )


def lookalike(sweep: Path) -> str:
    """`experiments/smollm2_lookalike.sh`'s runs beside the sweep's own cells, per seed: the paper merge and the
    calibrated merge of the same UserLoRA with the preset ReinforceLoRA (the sweep's `bnr` / `bnr-calibrated`
    cells) and with the look-alike one (`lookalike/eval-{paper,calibrated}-s<seed>`)."""
    cols = ("hs", "hs_content", "over_refusal", "xstest", "fa")
    lines = [
        "| seed | merge | ReinforceLoRA | chosen (c_U, c_R) | HS keyword | HS content | over-refusal | XSTest-style"
        " refused | FA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    found: dict[tuple[str, str], list[dict[str, float]]] = {}
    for ev in sorted(sweep.glob("lookalike/eval-*-s*/sst2.json")):
        merge, seed = ev.parent.name.removeprefix("eval-").rsplit("-s", 1)
        cell = sweep / "cells" / f"{'bnr' if merge == 'paper' else 'bnr-calibrated'}-p0.1-n200-s{seed}"
        for which, folder, final in (
            ("preset", cell / "eval", cell / "final"),
            ("look-alike", ev.parent, sweep / "lookalike" / f"{merge}-s{seed}"),
        ):
            m = _metrics(folder)
            found.setdefault((merge, which), []).append(m)
            cal = json.loads((final / "manifest.json").read_text()).get("calibration") if merge != "paper" else None
            chosen = (
                f"({cal['chosen']['user_scale']:g}, {cal['chosen']['reinforce_scale']:g})"
                + ("" if cal["feasible"] else ", infeasible")
                if cal
                else "(0.5, 0.5)"
            )
            lines.append(
                f"| {seed} | {merge} | {which} | {chosen} | " + " | ".join(f"{m[c]:.1f}" for c in cols) + " |"
            )
    for (merge, which), ms in found.items():
        if len(ms) > 1:
            lines.append(
                f"| mean of {len(ms)} | {merge} | {which} | - | "
                + " | ".join(stat([m[c] for m in ms]).text() for c in cols)
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep")
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    cells = rows(Path(args.sweep))
    print(table(cells))
    print("\n" + calibrations(Path(args.sweep)))
    print("\n" + cost(Path(args.sweep), cells))
    print("\n" + per_cell(cells))
    if (Path(args.sweep) / "lookalike").is_dir():
        print("\n" + lookalike(Path(args.sweep)))
    if args.plot:
        plot(cells, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
