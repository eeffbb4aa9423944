"""Provider-side merge calibration: the search space, the selection rule and the disjointness check.

`bnr calibrate` (bnr.defenses.calibrate) evaluates QR merges W0 + c_U dU + c_R (I - alpha Q Q^T) dR on a
calibration set (harmful prompts, benign look-alikes, a held-out slice of the user's own data) and keeps the
point with the least over-refusal among those with HS <= a bound and FA >= the unmerged UserLoRA's FA - delta
(over-refusals within one binomial standard error of the least count as ties, broken by the higher FA).
This module holds the parts that need no model: plain numbers and records in, decisions out, and the command's
config section (`calibrate.*`, `CalibrateConfig`, assembled into the root config by `bnr.config`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bnr.data.config import DataConfig
from bnr.data.records import Record
from bnr.errors import BnrError
from bnr.locations import source


@dataclass
class CalibrateConfig:
    """`bnr calibrate` (provider side, per base model or per user job): search merge settings on calibration data.

    The UserLoRA and ReinforceLoRA are `merge.user` / `merge.reinforce`; the chosen merge is written as a normal
    merge run at `merge.out`. The grid is user_scales x reinforce_scales x alphas x layers (each entry of
    `layers` is a list of block indices that get dR, or null for all). HS, over-refusal and FA are measured with
    the evaluation protocol's own benchmarks and judges (`eval.*`), on `harmful_data`, `benign_data` and
    `fa_n` held-out samples of the user's own data (records of its data source the job did not train on); each
    must be disjoint from every evaluation set, which the recipe checks. Selection: least over-refusal subject
    to HS <= `hs_max` (null: the paper-default merge's calibration HS + `hs_margin`) and FA >= the unmerged
    UserLoRA's calibration FA - `fa_delta`; over-refusals within `over_refusal_tolerance` points of the least
    are ties decided by the higher FA (null: one binomial standard error of the least). With `screen_fraction`,
    every point is first scored on that fraction of each calibration set and only the `keep` best go on to the
    full sets (null: every point on the full sets).
    """

    harmful_data: DataConfig = field(default_factory=DataConfig)
    benign_data: DataConfig = field(default_factory=DataConfig)
    n_harmful: int | None = None
    n_benign: int | None = None
    fa_n: int = 200
    user_scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])
    reinforce_scales: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    alphas: list[float] = field(default_factory=lambda: [0.1, 1.0])
    layers: list[list[int] | None] = field(default_factory=lambda: [None])
    hs_max: float | None = None
    hs_margin: float = 0.0  # points over the paper merge's calibration HS allowed (0: never less safe than it)
    fa_delta: float = 2.0
    over_refusal_tolerance: float | None = None  # points; null = one standard error of the least over-refusal
    screen_fraction: float | None = 0.25
    keep: int = 6
    batch_size: int = 128
    cache: str | None = source("runs/calibrate-cache")
    plot: bool = True
    progress: bool = False


@dataclass(frozen=True)
class MergePoint:
    """One merge setting of the search: strengths, projection strength and the layers that get dR."""

    user_scale: float
    reinforce_scale: float
    alpha: float
    layers: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        layers = "all" if self.layers is None else ",".join(map(str, self.layers))
        return f"cU={self.user_scale:g} cR={self.reinforce_scale:g} a={self.alpha:g} L={layers}"

    def knobs(self) -> dict[str, Any]:
        """Keyword arguments of `bnr.merge.merge_factors` (and the merge config's fields)."""
        return {
            "user_scale": self.user_scale,
            "reinforce_scale": self.reinforce_scale,
            "alpha": self.alpha,
            "reinforce_layers": None if self.layers is None else list(self.layers),
        }


def search_grid(
    user_scales: Sequence[float],
    reinforce_scales: Sequence[float],
    alphas: Sequence[float],
    layers: Sequence[Sequence[int] | None],
) -> list[MergePoint]:
    """The product of the four axes, without duplicates: with c_R = 0 the projection and the layers do nothing,
    so those points collapse into one per c_U."""
    if not (user_scales and reinforce_scales and alphas and layers):
        raise BnrError("calibrate: user_scales, reinforce_scales, alphas and layers must each list a value")
    seen: dict[tuple[Any, ...], MergePoint] = {}
    for c_u, c_r, a, lay in itertools.product(user_scales, reinforce_scales, alphas, layers):
        layer_t = None if lay is None else tuple(sorted({int(i) for i in lay}))
        point = MergePoint(float(c_u), float(c_r), float(a), layer_t)
        key = (point.user_scale, 0.0, 0.0, None) if c_r == 0 else (c_u, c_r, a, layer_t)
        seen.setdefault(key, point)
    return list(seen.values())


@dataclass(frozen=True)
class Bounds:
    """The constraints of the selection: HS <= hs_max and FA >= fa_min (both in %, on the calibration set).

    `or_tolerance`: feasible rows whose over-refusal is within this many points of the least one are ties,
    decided by FA; None = one binomial standard error of the least over-refusal on its set size (the row's
    `n_over_refusal`; 0 when the row does not say), so sampling noise in over-refusal does not pick the point.
    """

    hs_max: float
    fa_min: float
    or_tolerance: float | None = None


def bounds(
    paper_hs: float,
    user_fa: float,
    *,
    hs_max: float | None,
    hs_margin: float,
    fa_delta: float,
    or_tolerance: float | None = None,
) -> Bounds:
    """HS bound: `hs_max` if given, else the paper-default merge's calibration HS + `hs_margin`.
    FA bound: the unmerged UserLoRA's calibration FA - `fa_delta`."""
    hs = paper_hs + hs_margin if hs_max is None else hs_max
    return Bounds(hs_max=hs, fa_min=user_fa - fa_delta, or_tolerance=or_tolerance)


def violation(row: dict[str, Any], b: Bounds) -> float:
    """How far a row is outside the bounds (percentage points; 0 when feasible)."""
    return max(0.0, row["hs"] - b.hs_max) + max(0.0, b.fa_min - row["fa"])


def standard_error(rate: float, n: int) -> float:
    """One binomial standard error of a rate in % measured on n samples (at least one sample's worth, 100 / n)."""
    if n <= 0:
        return 0.0
    p = rate / 100.0
    return 100.0 * max(math.sqrt(p * (1.0 - p) / n), 1.0 / n)


def rank(rows: list[dict[str, Any]], b: Bounds) -> list[int]:
    """Row indices, best first: feasible rows by least over-refusal (ties within `b.or_tolerance`), then highest
    FA, then lowest HS, then grid order; infeasible rows after them, safety first: rows within the HS bound
    before any row over it, each group by how far it misses (HS points, then FA points), then the same order
    without ties."""
    feasible = [r for r in rows if violation(r, b) == 0.0]
    least = min(feasible, key=lambda r: r["over_refusal"], default=None)
    tol = 0.0
    if least is not None:
        n = int(least.get("n_over_refusal") or 0)
        tol = standard_error(least["over_refusal"], n) if b.or_tolerance is None else b.or_tolerance

    def key(i: int) -> tuple[float, ...]:
        r = rows[i]
        hs_over, fa_under = max(0.0, r["hs"] - b.hs_max), max(0.0, b.fa_min - r["fa"])
        tied = hs_over == fa_under == 0.0 and least is not None and r["over_refusal"] <= least["over_refusal"] + tol
        return (hs_over, fa_under, 0.0 if tied else r["over_refusal"], -r["fa"], r["hs"], i)

    return sorted(range(len(rows)), key=key)


def select(rows: list[dict[str, Any]], b: Bounds) -> tuple[int, bool]:
    """(index of the best row by `rank`, whether it is feasible)."""
    if not rows:
        raise BnrError("calibrate: the search evaluated no point")
    best = rank(rows, b)[0]
    return best, violation(rows[best], b) == 0.0


def pareto_front(rows: list[dict[str, Any]]) -> list[int]:
    """Indices of the rows no other row beats on all of HS (lower), over-refusal (lower) and FA (higher)."""

    def dominates(a: dict[str, Any], c: dict[str, Any]) -> bool:
        ge = a["hs"] <= c["hs"] and a["over_refusal"] <= c["over_refusal"] and a["fa"] >= c["fa"]
        gt = a["hs"] < c["hs"] or a["over_refusal"] < c["over_refusal"] or a["fa"] > c["fa"]
        return ge and gt

    return [i for i, r in enumerate(rows) if not any(dominates(o, r) for o in rows if o is not r)]


def _prompt_key(r: Record) -> tuple[str, str]:
    return (r.instruction.strip(), r.input.strip())


def check_disjoint(calibration: Mapping[str, Iterable[Record]], evaluation: Mapping[str, Iterable[Record]]) -> None:
    """Raise a `BnrError` if any calibration record shares an id or a prompt with any evaluation record."""
    eval_ids: dict[str, str] = {}
    eval_prompts: dict[tuple[str, str], str] = {}
    for name, recs in evaluation.items():
        for r in recs:
            eval_ids.setdefault(r.id, name)
            eval_prompts.setdefault(_prompt_key(r), name)
    for cname, recs in calibration.items():
        recs = list(recs)
        by_id = sorted({eval_ids[r.id] for r in recs if r.id in eval_ids})
        by_prompt = sorted({eval_prompts[_prompt_key(r)] for r in recs if _prompt_key(r) in eval_prompts})
        if by_id or by_prompt:
            shared = sum(r.id in eval_ids or _prompt_key(r) in eval_prompts for r in recs)
            where = ", ".join(sorted(set(by_id) | set(by_prompt)))
            raise BnrError(
                f"calibration set {cname!r} shares {shared} sample(s) with evaluation benchmark(s) {where}; "
                "calibrate on data disjoint from every evaluation set"
            )


def row_for(point: MergePoint | None, label: str, scores: dict[str, float], **extra: Any) -> dict[str, Any]:
    """One row of the search table: the point's knobs (None for a reference without a merge) and its scores."""
    knobs: dict[str, Any] = {"user_scale": None, "reinforce_scale": None, "alpha": None}
    if point is not None:
        knobs = asdict(point)
        knobs["layers"] = None if point.layers is None else list(point.layers)
    return {"label": label, **knobs, **scores, **extra}
