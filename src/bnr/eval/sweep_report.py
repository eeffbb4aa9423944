"""A sweep's report (`report.md`): the columns a preset names, per group of cells, with what every cell cost.

`sweep.report` maps a column title to a column: a name registered in `REPORT_COLUMNS` (`hs`, `over_refusal`,
`fa`, `task_refused`, ...), `judge:NAME` (HS by that judge alone, on the harm benchmark) or `agreement:NAME` (its
per-sample agreement with the primary verdict), or `BENCHMARK.METRIC` (any aggregate number of a benchmark's
evaluation; BENCHMARK is a result name such as `over-refusal`, or a role: `harm`, `refusal`, `utility` for the FA
benchmark). The report has one row per group - the defense, p, n and extra axes recorded in each cell's
`cell.json` - with mean ± sample std over its seeds, then the wall times of the user training (one per distinct
UserLoRA: a shared one is shown under the group that trained it first) and of the evaluation (generation and
judging; `cached` when the completions came from the response cache); then every cell's own wall times, the
calibration searches (cells whose deliverable records one) and one line pricing the whole sweep from the
medians of its measured stages. With `sweep.plots`, `report.png` puts each group's HS against its over-refusal,
FA as the colour. Paths in `cell.json` are relative to where the sweep ran.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from bnr.errors import BnrError
from bnr.eval.refusal import is_refusal
from bnr.eval.roles import ROLE_KEYS, headline, metric_benchmarks, worst_case
from bnr.eval.tables import stat
from bnr.registry import Registry

REPORT = "report.md"
REPORT_PLOT = "report.png"


@dataclass
class CellRecord:
    """One evaluated cell (or the base model) as the report reads it."""

    name: str  # the cell's folder name ("base" for the base model)
    label: str  # the row's defense (or the base's label)
    axes: dict[str, Any]  # p, n, seed and the extra axes (key -> value); empty for the base
    eval_dir: Path
    user: str | None = None  # the UserLoRA run (cell.json)
    final: Path | None = None  # the cell's own stage after training (`final/`), when it has one
    fa_benchmark: str | None = None

    @cached_property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.eval_dir / "summary.json").read_text())
        return data

    def aggregate(self, result: str) -> dict[str, Any]:
        """`<result>.json`: the benchmark's aggregate record (metrics, wall time, cached)."""
        data: dict[str, Any] = json.loads((self.eval_dir / f"{result}.json").read_text())
        return data

    def completions(self, result: str) -> list[str]:
        with (self.eval_dir / f"{result}.samples.jsonl").open(encoding="utf-8") as f:
            return [json.loads(line)["completion"] for line in f if line.strip()]

    def role_result(self, role: str) -> str | None:
        """The result name that gives `role`'s number (`bnr.eval.roles`): harm, refusal or utility (FA)."""
        key = {"harm": "hs", "refusal": "over_refusal", "utility": "fa"}[role]
        return metric_benchmarks(self.summary["results"], self.fa_benchmark, self.summary).get(key)

    @property
    def seed(self) -> int | None:
        return self.axes.get("seed")

    @property
    def group(self) -> tuple[str, Any, Any, str]:
        """(defense, p, n, extra axes as `key=value`) - the cells that differ only by seed."""
        extra = " ".join(f"{k}={_show(v)}" for k, v in self.axes.items() if k not in ("user.p", "user.n", "seed"))
        return self.label, self.axes.get("user.p"), self.axes.get("user.n"), extra


Column = Callable[[CellRecord], float | None]
REPORT_COLUMNS: Registry[Column] = Registry("report column")


def _headline(key: str) -> Column:
    def read(rec: CellRecord) -> float | None:
        value = headline(rec.summary["results"], rec.fa_benchmark, rec.summary).get(key)
        return None if value is None else float(value)

    return read


for _key, _doc in (("hs", "HS"), ("over_refusal", "over-refusal"), ("fa", "FA (sweep.fa_benchmark)")):
    REPORT_COLUMNS.add(_key, _headline(_key), f"{_doc}: the headline number its role gives (bnr.eval.roles)")


@REPORT_COLUMNS.register("hs_worst")
def hs_worst(rec: CellRecord) -> float | None:
    """The worst HS over every harm benchmark evaluated (plain, framed, triggered; `bnr.eval.roles.worst_case`)."""
    worst = worst_case(rec.summary["results"], "harm", rec.summary)
    return None if worst is None else worst[1]


@REPORT_COLUMNS.register("task_refused")
def task_refused(rec: CellRecord) -> float | None:
    """The user's own task refused: % of the FA benchmark's answers that the project's refusal rule flags."""
    fa = rec.role_result("utility")
    if fa is None:
        return None
    answers = rec.completions(fa)
    return 100.0 * sum(is_refusal(c) for c in answers) / len(answers) if answers else None


@REPORT_COLUMNS.register("eval_s")
def eval_s(rec: CellRecord) -> float | None:
    """Evaluation wall time (generation and judging, every benchmark); None when completions came from the cache."""
    records = [rec.aggregate(name) for name in rec.summary["results"]]
    if any(r.get("cached_completions") for r in records):
        return None
    return float(sum(r.get("wall_time_s") or 0.0 for r in records))


def stage_wall(run: str | Path | None) -> float | None:
    """A stage's own wall time (its manifest's `wall_time_s`), or None when there is no such run."""
    manifest = Path(run or "-") / "manifest.json"
    if not run or not manifest.is_file():
        return None
    return float(json.loads(manifest.read_text()).get("wall_time_s") or 0.0)


@REPORT_COLUMNS.register("user_s")
def user_s(rec: CellRecord) -> float | None:
    """The user training's wall time (its run's manifest)."""
    return stage_wall(rec.user)


def calibration(rec: CellRecord) -> dict[str, Any] | None:
    """The calibration search the cell's deliverable records (`bnr-calibrated`), if any."""
    manifest = (rec.final or Path("-")) / "manifest.json"
    if rec.final is None or not manifest.is_file():
        return None
    found: dict[str, Any] | None = json.loads(manifest.read_text()).get("calibration")
    return found


@REPORT_COLUMNS.register("final_s")
def final_s(rec: CellRecord) -> float | None:
    """The cell's own stage after the user training (a merge, a post-hoc defense, or a calibration search, whose
    cost the deliverable records), when the cell has one."""
    cal = calibration(rec)
    search = (cal or {}).get("cost", {}).get("calibration_wall_time_s")
    return float(search) if search is not None else stage_wall(rec.final)


def column(spec: str) -> Column:
    """A `sweep.report` column: a registered name, `judge:NAME`, `agreement:NAME` or `BENCHMARK.METRIC`."""
    if spec in REPORT_COLUMNS:
        return REPORT_COLUMNS.get(spec)
    kind, _, judge = spec.partition(":")
    if judge and kind in ("judge", "agreement"):
        from bnr.eval.judges import JUDGES

        JUDGES.get(judge)  # an unknown judge: one line listing the registered ones
        return _metric("harm", f"{'hs' if kind == 'judge' else 'agreement'}_{judge}")
    bench, dot, metric = spec.partition(".")
    if dot and bench and metric:
        return _metric(bench, metric)
    raise BnrError(
        f"sweep.report column {spec!r} is unknown; give one of {', '.join(REPORT_COLUMNS.names())}, judge:NAME, "
        "agreement:NAME or BENCHMARK.METRIC (e.g. over-refusal.refusal_rate)"
    )


def _metric(bench: str, metric: str) -> Column:
    def read(rec: CellRecord) -> float | None:
        name = rec.role_result(bench) if bench in ROLE_KEYS else bench
        result = rec.summary["results"].get(name) if name else None
        value = None if result is None else result.get(metric)
        return None if value is None else float(value)

    return read


def check_columns(report: dict[str, str]) -> None:
    """Every column of `sweep.report` resolves (before the sweep runs anything)."""
    for spec in report.values():
        column(spec)


def _groups(records: list[CellRecord]) -> dict[tuple[str, Any, Any, str], list[CellRecord]]:
    """Records by group, in the order given (the base first, then the grid's), each sorted by seed."""
    groups: dict[tuple[str, Any, Any, str], list[CellRecord]] = {}
    for rec in records:
        groups.setdefault(rec.group, []).append(rec)
    return {g: sorted(rs, key=lambda r: r.seed or 0) for g, rs in groups.items()}


def _show(value: Any) -> str:
    return "-" if value is None or value == "" else f"{value:g}" if isinstance(value, float) else str(value)


def group_table(records: list[CellRecord], report: dict[str, str]) -> str:
    """One row per group: its axes, seeds, the named columns (mean ± std over seeds) and its wall times."""
    cols = {title: column(spec) for title, spec in report.items()}
    head = ["defense", "p", "n", "axes", "seeds", *cols, "user training s", "eval s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    trained_by: dict[str, str] = {}  # UserLoRA run -> the first group that trained it
    for (label, p, n, extra), rs in _groups(records).items():
        seeds = ",".join(str(r.seed) for r in rs) if rs[0].seed is not None else "-"
        values = [stat([fn(r) for r in rs]).text() for fn in cols.values()]  # type: ignore[misc]
        shared = {trained_by[r.user] for r in rs if r.user in trained_by}
        own = [t for r in rs if r.user and r.user not in trained_by and (t := user_s(r)) is not None]
        for r in rs:
            if r.user:
                trained_by.setdefault(r.user, label)
        train = stat(own).text() if own else (f"{', '.join(sorted(shared))}'s" if shared else "-")
        evals = [t for r in rs if (t := eval_s(r)) is not None]
        row = [
            label,
            _show(p),
            _show(n),
            extra or "-",
            seeds,
            *values,
            train,
            stat(evals).text() if evals else "cached",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def per_cell(records: list[CellRecord]) -> str:
    """Every cell's wall times, in the table's order: its user training (or the cell that trained the UserLoRA it
    shares), its own stage after it, and its evaluation."""
    lines = ["| cell | user training s | merge / defense / search s | eval s |", "|---|---|---|---|"]
    first: dict[str, str] = {}
    for r in (r for rs in _groups(records).values() for r in rs if r.seed is not None):
        own = r.user not in first
        if r.user:
            first.setdefault(r.user, r.name)
        t = user_s(r)
        train = "-" if not r.user else (("-" if t is None else f"{t:.0f}") if own else f"= {first[r.user]}")
        fin, ev = final_s(r), eval_s(r)
        lines.append(f"| {r.name} | {train} | {'-' if fin is None else f'{fin:.0f}'} | {_cached(ev)} |")
    return "\n".join(lines)


def _cached(seconds: float | None) -> str:
    return "cached" if seconds is None else f"{seconds:.0f}"


def calibrations(records: list[CellRecord]) -> str | None:
    """Per cell whose deliverable records a calibration search: the merge it chose, whether it was feasible, and
    the search's cost; None when no cell has one."""
    lines = [
        "| cell | chosen (c_U, c_R, alpha) | feasible | calibration HS / over-refusal / FA | search s | x training |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        c = calibration(r)
        if not c:
            continue
        ch, cost = c["chosen"], c["cost"]
        lines.append(
            f"| {r.name} | ({ch['user_scale']:g}, {ch['reinforce_scale']:g}, {ch['alpha']:g}) | {c['feasible']} | "
            f"{ch['hs']:g} / {ch['over_refusal']:g} / {ch['fa']:g} | {cost['calibration_wall_time_s']:.0f} | "
            f"{cost['ratio_to_user_training']:.1f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else None


def cost(sweep: Path, records: list[CellRecord]) -> str:
    """What the whole sweep costs on these cores, from the medians of its stages' measured wall times.

    The raw sum of the manifests is not the sweep's cost: cells whose completions came from the response cache
    record seconds, and a stage that was paused (SIGSTOP, for a timing measurement beside it) records the pause.
    So every kind of stage is priced at the median of its measured runs, times how often the sweep runs it: the
    provider stages once, one user training per distinct UserLoRA, one evaluation per cell (and the base), and
    one calibration search per cell whose deliverable records one."""
    providers = sum(stage_wall(m.parent) or 0.0 for m in sweep.glob("providers/*/manifest.json"))
    trainings = {r.user: t for r in records if r.user and (t := user_s(r)) is not None}
    evals = [t for r in records if (t := eval_s(r)) is not None]
    searches = [t for r in records if calibration(r) and (t := final_s(r)) is not None]
    n_cells = sum(r.seed is not None for r in records)
    n_evals = len(records)
    train_s = statistics.median(trainings.values()) if trainings else 0.0
    each_eval = statistics.median(evals) if evals else 0.0
    search_s = statistics.median(searches) if searches else 0.0
    total = providers + len(trainings) * train_s + n_evals * each_eval + len(searches) * search_s
    return (
        f"cost of the {n_cells} cells: provider stages {providers:.0f} s (once) + {len(trainings)} user trainings x "
        f"median {train_s:.0f} s (of {len(trainings)}) + {n_evals} evaluations (cells and base) x median "
        f"{each_eval:.0f} s (of {len(evals)} not cached) + {len(searches)} calibration searches x median "
        f"{search_s:.0f} s = {total:.0f} s ({total / 3600:.2f} h)"
    )


MARKERS = ("*", "o", "s", "^", "v", "D", "P", "X", "h", "<", ">", "p", "d", "8")


def plot(records: list[CellRecord], path: Path, title: str = "") -> Path:
    """HS against over-refusal, one marker per group (legend), FA as the colour, std over seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    hs, over, fa = (REPORT_COLUMNS.get(k) for k in ("hs", "over_refusal", "fa"))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    norm, cmap = Normalize(0, 100), plt.get_cmap("viridis")
    for k, ((label, p, _, extra), rs) in enumerate(_groups(records).items()):
        x, y = [over(r) or 0.0 for r in rs], [hs(r) or 0.0 for r in rs]
        mx, my, mfa = statistics.mean(x), statistics.mean(y), statistics.mean(fa(r) or 0.0 for r in rs)
        if len(rs) > 1:
            ax.errorbar(mx, my, xerr=statistics.stdev(x), yerr=statistics.stdev(y), fmt="none", ecolor="grey", lw=0.8)
        seeds = f" ({len(rs)} seed{'s' if len(rs) > 1 else ''})" if rs[0].seed is not None else ""
        name = f"{label}, p={_show(p)}{', ' + extra if extra else ''}" if rs[0].seed is not None else label
        ax.scatter(
            mx,
            my,
            color=cmap(norm(mfa)),
            marker=MARKERS[k % len(MARKERS)],
            s=140 if k == 0 else 80,
            edgecolors="black",
            zorder=3,
            label=name + seeds,
        )
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="FA (%)")
    legend = ax.legend(fontsize=7, loc="upper right")
    for handle in legend.legend_handles:
        getattr(handle, "set_facecolor", lambda colour: None)("lightgrey")
    ax.set_xlabel("over-refusal: benign prompts refused (%)")
    ax.set_ylabel("HS (%)")
    ax.set_title(title or "mean over seeds", fontsize=9)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(sweep: Path, records: list[CellRecord], report: dict[str, str]) -> str:
    """The whole `report.md`: the group table, the cost line, every cell's wall times and the calibrations."""
    if not records:
        return "no finished cells yet\n"
    named = ", ".join(f"{title}: {spec}" for title, spec in report.items())
    parts = [
        f"Mean ± sample std over seeds; columns from `sweep.report` ({named})",
        group_table(records, report),
        cost(sweep, records),
        per_cell(records),
    ]
    cal = calibrations(records)
    if cal:
        parts.append(cal)
    return "\n\n".join(parts) + "\n"
