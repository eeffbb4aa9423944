"""Numbers with uncertainty: bootstrap confidence intervals over prompts and seeds, and paired comparisons.

A cell's score on a metric (HS, over-refusal, FA) is the mean of per-prompt 0/1 outcomes read from its evaluation's
`<benchmark>.samples.jsonl` (`flagged`, `refused`, `correct`). A defense's number at (n, p) is the mean over its
seeds. The interval is a two-level (hierarchical) percentile bootstrap: resample the seeds, and within each the
prompts, `RESAMPLES` times with a fixed RNG seed, so a table is the same every time it is written.

Two defenses evaluated on the same seeds and prompts are compared on their per-(seed, prompt) differences: a
paired bootstrap interval of the mean difference (the gap is real at 95% when it excludes 0) and an exact sign
test over the pairs that differ.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESAMPLES = 2000
RNG_SEED = 0
LEVEL = 0.95
# metric -> the per-sample field of its benchmark's samples file
OUTCOME = {"hs": "flagged", "over_refusal": "refused", "fa": "correct"}
LABELS = {"hs": "HS", "over_refusal": "OR", "fa": "FA"}

Outcomes = dict[str, float]  # prompt key -> 0/1 outcome of one seed's evaluation


def sample_outcomes(eval_dir: Path, benchmark: str, metric: str) -> Outcomes:
    """Prompt key -> outcome (0 or 1) of one benchmark's samples; {} when the file or the field is absent."""
    path = Path(eval_dir) / f"{benchmark}.samples.jsonl"
    if not path.is_file():
        return {}
    out: Outcomes = {}
    seen: dict[str, int] = defaultdict(int)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        value = row.get(OUTCOME[metric])
        if value is None:
            continue
        key = f"{row.get('id')}#{seen[str(row.get('id'))]}"  # a prompt asked twice (variants) is two samples
        seen[str(row.get("id"))] += 1
        out[key] = float(bool(value))
    return out


def _seed_means(seeds: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(seeds, RESAMPLES): each seed's mean over its prompts resampled with replacement."""
    return np.stack([x[rng.integers(0, len(x), size=(RESAMPLES, len(x)))].mean(axis=1) for x in seeds])


def bootstrap(seeds: list[np.ndarray]) -> np.ndarray:
    """RESAMPLES bootstrap means (in %) of the mean over seeds of per-prompt outcomes: seeds and prompts resampled."""
    rng = np.random.default_rng(RNG_SEED)
    per_seed = _seed_means(seeds, rng)
    if len(seeds) == 1:
        return 100 * per_seed[0]
    pick = rng.integers(0, len(seeds), size=(RESAMPLES, len(seeds)))
    return 100 * per_seed[pick, np.arange(RESAMPLES)[:, None]].mean(axis=1)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    prompts: int

    def text(self) -> str:
        return f"{self.mean:.1f} [{self.low:.1f}, {self.high:.1f}]"


def interval(seeds: list[Outcomes]) -> Interval | None:
    """Mean over seeds (in %), its bootstrap interval, each seed's own value; None without outcomes."""
    arrays = [np.array(list(s.values())) for s in seeds if s]
    if not arrays:
        return None
    boot = bootstrap(arrays)
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    means = [100 * float(a.mean()) for a in arrays]
    per_seed = tuple(round(m, 2) for m in means)
    return Interval(float(np.mean(means)), float(lo), float(hi), per_seed, int(np.mean([len(a) for a in arrays])))


def sign_test(diffs: np.ndarray) -> float:
    """Exact two-sided sign test p-value over the non-zero differences (1.0 when none differ)."""
    pos, n = int((diffs > 0).sum()), int((diffs != 0).sum())
    if n == 0:
        return 1.0
    k = min(pos, n - pos)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Comparison:
    diff: float  # mean of a - b, in points
    low: float
    high: float
    p_bootstrap: float
    p_sign: float
    pairs: int

    @property
    def real(self) -> bool:
        return self.low > 0 or self.high < 0


def compare(a: dict[Any, Outcomes], b: dict[Any, Outcomes]) -> Comparison | None:
    """a - b over the seeds both have and, within each, the prompts both have; None when they share none."""
    diffs = []
    for seed in sorted(set(a) & set(b), key=str):
        common = sorted(set(a[seed]) & set(b[seed]))
        if common:
            diffs.append(np.array([a[seed][k] - b[seed][k] for k in common]))
    if not diffs:
        return None
    boot = bootstrap(diffs)
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    p_boot = min(1.0, 2 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    pooled = np.concatenate(diffs)
    mean = 100 * float(np.mean([d.mean() for d in diffs]))
    return Comparison(mean, float(lo), float(hi), p_boot, sign_test(pooled), len(pooled))


UNCERTAINTY_MD = "uncertainty.md"
UNCERTAINTY_JSON = "uncertainty.json"

# (n, p) -> defense label -> seed -> metric -> outcomes
Groups = dict[tuple[int, float], dict[str, dict[Any, dict[str, Outcomes]]]]


Evaluation = tuple[dict[str, Any], Path, dict[str, str]]  # (sweep row, its evaluation folder, metric -> benchmark)


def cell_outcomes(eval_dir: Path, benchmarks: dict[str, str]) -> dict[str, Outcomes]:
    """metric -> outcomes of one evaluation, for the metrics of `benchmarks` (metric -> benchmark name)."""
    out = {}
    for metric, bench in benchmarks.items():
        found = sample_outcomes(eval_dir, bench, metric) if metric in OUTCOME else {}
        if found:
            out[metric] = found
    return out


def group_cells(evaluations: list[Evaluation], base: str | None) -> Groups:
    """Evaluations grouped by (n, p) and row label; the one labelled `base` (the base model, evaluated once)
    joins every group, paired with every seed."""
    groups: Groups = defaultdict(lambda: defaultdict(dict))
    reference = None
    for row, folder, benchmarks in evaluations:
        if base is not None and row["label"] == base:
            reference = cell_outcomes(folder, benchmarks)
            continue
        groups[(int(row["n"]), float(row["p"]))][str(row["label"])][row.get("seed")] = cell_outcomes(
            folder, benchmarks
        )
    if reference is not None:
        for label_seeds in groups.values():
            seeds = {s for by_seed in label_seeds.values() for s in by_seed}
            label_seeds[str(base)] = {s: reference for s in seeds}
    return groups


def _metric_seeds(by_seed: dict[Any, dict[str, Outcomes]], metric: str) -> dict[Any, Outcomes]:
    return {s: m[metric] for s, m in by_seed.items() if metric in m}


def summarize(groups: Groups) -> list[dict[str, Any]]:
    """Per (n, p): each defense's interval per metric and every pair's paired comparison, as plain records."""
    out = []
    for (n, p), labels in groups.items():
        rows, pairs = [], []
        names = list(labels)
        for label in names:
            cis = {m: interval(list(_metric_seeds(labels[label], m).values())) for m in OUTCOME}
            rows.append({"defense": label, "seeds": sorted(labels[label], key=str), **{m: c for m, c in cis.items()}})
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                for m in OUTCOME:
                    c = compare(_metric_seeds(labels[a], m), _metric_seeds(labels[b], m))
                    if c is not None:
                        pairs.append({"a": a, "b": b, "metric": m, "comparison": c})
        out.append({"n": n, "p": p, "rows": rows, "pairs": pairs})
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    """uncertainty.md: intervals with per-seed values per (n, p), then the paired comparisons."""
    head = (
        f"Mean over seeds [{int(LEVEL * 100)}% bootstrap interval over prompts and seeds; {RESAMPLES} resamples, "
        f"RNG seed {RNG_SEED}] (each seed's value), in %."
    )
    parts = [head]
    for g in summary:
        lines = [
            f"**n = {g['n']}, p = {g['p']:g}**",
            "",
            "| Defense | HS | OR | FA | seeds |",
            "|---|---|---|---|---|",
        ]
        for r in g["rows"]:
            cells = [_interval_text(r[m]) for m in OUTCOME]
            lines.append(f"| {r['defense']} | " + " | ".join(cells) + f" | {', '.join(map(str, r['seeds']))} |")
        lines += [
            "",
            "Paired (same seeds, same prompts): gap = A - B in points.",
            "",
            "| A | B | metric | gap [95% CI] | p bootstrap | p sign test | pairs | real? |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for pr in g["pairs"]:
            c = pr["comparison"]
            lines.append(
                f"| {pr['a']} | {pr['b']} | {LABELS[pr['metric']]} | {c.diff:+.1f} [{c.low:+.1f}, {c.high:+.1f}] | "
                f"{c.p_bootstrap:.3f} | {c.p_sign:.3g} | {c.pairs} | {'yes' if c.real else 'no'} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _interval_text(ci: Interval | None) -> str:
    if ci is None:
        return "-"
    seeds = f" ({', '.join(f'{v:.1f}' for v in ci.per_seed)})" if len(ci.per_seed) > 1 else ""
    return ci.text() + seeds


def to_json(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def plain(v: Any) -> Any:
        return {**v.__dict__, "real": v.real} if isinstance(v, Comparison) else v.__dict__ if v else v

    return [
        {**g, "rows": [{k: plain(v) if k in OUTCOME else v for k, v in r.items()} for r in g["rows"]]}
        | {"pairs": [{**pr, "comparison": plain(pr["comparison"])} for pr in g["pairs"]]}
        for g in summary
    ]


# (defense label, n, p, metric) -> (low, high) of its bootstrap interval, in %
CellIntervals = dict[tuple[str, int, float, str], tuple[float, float]]


def cell_intervals(summary: list[dict[str, Any]]) -> CellIntervals:
    """Each (defense, n, p, metric)'s bootstrap interval from `summarize`'s records, for the sweep's table."""
    return {
        (str(r["defense"]), int(g["n"]), float(g["p"]), m): (r[m].low, r[m].high)
        for g in summary
        for r in g["rows"]
        for m in OUTCOME
        if r[m] is not None
    }


def write_uncertainty(out: Path, evaluations: list[Evaluation], base: str | None) -> Path:
    """Write `uncertainty.md` and `uncertainty.json` into a sweep folder; returns the Markdown file. `base`: the
    label of the base model's row, if any."""
    return write_summary(out, summarize(group_cells(evaluations, base)))


def write_summary(out: Path, summary: list[dict[str, Any]]) -> Path:
    """Write `summarize`'s records as `uncertainty.md` and `uncertainty.json` into `out`; returns the Markdown."""
    from bnr.artifacts import atomic_write_json, atomic_write_text

    atomic_write_json(out / UNCERTAINTY_JSON, to_json(summary))
    atomic_write_text(out / UNCERTAINTY_MD, markdown(summary))
    return out / UNCERTAINTY_MD
