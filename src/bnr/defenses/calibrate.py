"""`bnr calibrate`: search merge settings on a calibration set, then write the chosen merge as a merge run.

Provider side, per base model or per user job. Reads top to bottom: find the evaluation protocol's HS,
over-refusal and FA benchmarks; build the calibration sets (harmful prompts, benign look-alikes and a held-out
slice of the user's own data) and check them against every evaluation set; load the base once and read both
adapters once; score the references (aligned base, unmerged UserLoRA, the paper's merge) and every grid point
(each a factor-space merge added to the base weights in place, completions through the one generation loop and
the response cache); pick the point with the least over-refusal within the HS and FA bounds; write it with
`bnr merge`'s writer (search table in `merge_diagnostics.json`, a Pareto plot, calibration and evaluation ids
and the search's cost against the user's fine-tuning job in the manifest).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import yaml

from bnr.artifacts import hash_json, is_complete, read_manifest
from bnr.calibration import (
    Bounds,
    MergePoint,
    bounds,
    check_disjoint,
    pareto_front,
    rank,
    row_for,
    search_grid,
    select,
)
from bnr.config import Config, DataConfig, parse_section
from bnr.data.records import Record, write_jsonl
from bnr.data.sources import load_records
from bnr.errors import BnrError
from bnr.eval.benchmarks import Benchmark, benchmark_class, make_benchmark, run_benchmark
from bnr.eval.cache import ResponseCache
from bnr.eval.protocols import PROTOCOLS, Protocol
from bnr.eval.roles import by_role, check_orientation
from bnr.runs.fit import load_sampled

log = logging.getLogger(__name__)
ROLES = ("harmful", "over_refusal", "fa")
PLOT = "calibration_pareto.png"
COLUMN = {"harmful": "hs", "over_refusal": "over_refusal", "fa": "fa"}


# ---------------------------------------------------------------- data


def benchmark_roles(cfg: Config) -> dict[str, str]:
    """Which evaluation benchmark measures HS, over-refusal and FA (FA: `sweep.fa_benchmark` or the first other)."""
    for name in cfg.eval.benchmarks:
        check_orientation(benchmark_class(name))  # the search ranks by the role's direction
    named = by_role(((n, benchmark_class(n).role) for n in cfg.eval.benchmarks), cfg.sweep.fa_benchmark)
    roles = {{"hs": "harmful"}.get(key, key): name for key, name in named.items()}
    missing = [r for r in ROLES if r not in roles]
    if missing:
        raise BnrError(
            f"calibrate needs eval.benchmarks with a harmful, an over-refusal and an FA benchmark; "
            f"{', '.join(missing)} missing in {cfg.eval.benchmarks}"
        )
    return roles


def _light(opts: dict[str, Any]) -> dict[str, Any]:
    """Options that build a benchmark without loading a judge model (for reading its metric and samples)."""
    return {**opts, "judges": ["keyword"]} if "judges" in opts else opts


def evaluation_records(cfg: Config, protocol: Protocol) -> dict[str, list[Record]]:
    """The samples of every evaluation benchmark, exactly as `bnr eval` loads them."""
    from bnr.eval.suite import benchmark_options

    return {
        name: make_benchmark(name, **_light(benchmark_options(name, protocol, cfg.eval))).load()
        for name in cfg.eval.benchmarks
    }


def heldout_user_slice(user_dir: str, n: int, seed: int) -> list[Record]:
    """`n` records of the user job's benign data source that the job did not train on (ids and prompts)."""
    manifest = read_manifest(user_dir)
    used_ids = set(manifest.get("data", {}).get("ids", []))
    pool = load_records(_user_benign_data(user_dir))
    used_prompts = {(r.instruction, r.input) for r in pool if r.id in used_ids}
    free = [r for r in pool if r.id not in used_ids and (r.instruction, r.input) not in used_prompts]
    if len(free) < n:
        raise BnrError(
            f"the user's data has only {len(free)} samples the job did not train on; lower calibrate.fa_n (now {n})"
        )
    return random.Random(seed).sample(free, n)


def _user_benign_data(user_dir: str) -> DataConfig:
    """The user job's `user.benign_data`, read from its run's config.yaml alone: the rest of a config written by
    an older bnr may use keys that have since moved, and calibration needs only this section."""
    path = Path(user_dir) / "config.yaml"
    try:
        tree = yaml.safe_load(path.read_text()) or {}
        data = tree["user"]["benign_data"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise BnrError(f"cannot read user.benign_data from {str(path)!r} ({e}); is merge.user a user run?") from None
    return parse_section(DataConfig, data, "user.benign_data.")


def calibration_prompts(cfg: Config) -> dict[str, list[Record]]:
    """The harmful and benign calibration prompts (prompt sets: answers not needed)."""
    c = cfg.calibrate
    for role, data in (("harmful_data", c.harmful_data), ("benign_data", c.benign_data)):
        if data.source == "file" and not data.path:
            raise BnrError(f"calibrate.{role} is not set; give a dataset disjoint from the evaluation sets")
    return {
        "harmful": load_sampled(c.harmful_data, c.n_harmful, cfg.seed, "calibration harmful", require_output=False),
        "over_refusal": load_sampled(
            c.benign_data, c.n_benign, cfg.seed + 1, "calibration benign", require_output=False
        ),
    }


def calibration_sets(cfg: Config) -> dict[str, list[Record]]:
    """The calibration prompts and `fa_n` held-out records of the user job's own data."""
    return {**calibration_prompts(cfg), "fa": heldout_user_slice(cfg.merge.user, cfg.calibrate.fa_n, cfg.seed + 2)}


def calibration_benchmarks(
    cfg: Config, protocol: Protocol, roles: dict[str, str], files: dict[str, Path]
) -> dict[str, Benchmark]:
    """The evaluation benchmarks (same judges, budgets, scoring) pointed at the calibration files."""
    from bnr.eval.suite import benchmark_options

    out = {}
    for role, name in roles.items():
        opts = benchmark_options(name, protocol, cfg.eval)
        opts.pop("prompts", None)
        opts.pop("limit", None)
        opts["data"] = DataConfig(source="file", path=str(files[role]))
        if "per_source_limit" in opts:  # the evaluation's per-source slice: the calibration sets are chosen already
            opts["per_source_limit"] = None
        out[role] = make_benchmark(name, **opts)
    return out


# ---------------------------------------------------------------- search


@dataclasses.dataclass
class Scorer:
    """Scores merges of one (UserLoRA, ReinforceLoRA) pair on one loaded base, per stage of benchmarks
    (`full`: the whole calibration sets; `screen`: their first part, for the cheap first pass)."""

    cfg: Config
    protocol: Protocol
    stages: dict[str, dict[str, Benchmark]]
    model: Any
    tokenizer: Any
    user: Any
    reinforce: Any
    base_identity: dict[str, Any]
    cache: ResponseCache | None
    generated: int = 0

    def merge(self, point: MergePoint | None, *, method: str | None = None, scale: float | None = None) -> Any:
        from bnr.merge import knobs_of, merge_factors

        m = self.cfg.merge
        if point is None:  # the paper's merge (or `method`, e.g. none = UserLoRA alone, at `scale`)
            point = MergePoint(scale or m.scale, scale or m.scale, m.alpha)
        return merge_factors(self.user, self.reinforce, **knobs_of(m, method=method or m.method, **point.knobs()))

    def score(self, result: Any | None, stage: str = "full") -> dict[str, Any]:
        from bnr.merge import merged_into

        started = time.time()
        key = self._key(result)
        scores: dict[str, Any] = {}
        cached = True
        with merged_into(self.model, result) if result is not None else nullcontext():
            for role, bench in self.stages[stage].items():
                res = run_benchmark(
                    bench,
                    self.model,
                    self.tokenizer,
                    template=self.cfg.eval.template or self.protocol.template,
                    batch_size=self.cfg.calibrate.batch_size,
                    stop=list(self.protocol.stop),
                    strip=self.protocol.strip,
                    progress=self.cfg.calibrate.progress,
                    cache=self.cache,
                    model_key=key,
                )
                scores[COLUMN[role]] = res.value
                if role == "over_refusal":
                    scores["n_over_refusal"] = res.n
                cached &= res.cached
                self.generated += 0 if res.cached else res.n
        return {**scores, "stage": stage, "wall_time_s": round(time.time() - started, 3), "cached": cached}

    def _key(self, result: Any | None) -> str:
        if result is None:  # the plain base: the same key as `bnr eval` of the base model
            return hash_json({"base": self.base_identity, "adapter": None})
        s = {k: v for k, v in result.summary.items() if k not in ("inputs",)}
        inputs = {k: v["weights_sha256"] for k, v in result.summary["inputs"].items()}
        return hash_json({"base": self.base_identity, "merge": s, "inputs": inputs})

    def references(self, stage: str) -> dict[str, dict[str, Any]]:
        """The aligned base, the unmerged UserLoRA (c_U = 1, no dR) and the paper's merge."""
        m = self.cfg.merge
        user = self.score(self.merge(None, method="none", scale=1.0), stage)
        return {
            "base": row_for(None, "aligned base", self.score(None, stage)),
            "user": row_for(MergePoint(1.0, 0.0, 0.0), "UserLoRA unmerged", user),
            "paper": row_for(
                MergePoint(m.scale, m.scale, m.alpha), "paper merge", self.score(self.merge(None), stage)
            ),
        }


def search(scorer: Scorer, points: list[MergePoint]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(one row per grid point, the reference rows on the full sets).

    With a `screen` stage every point is first scored on the screening subsets, and only the `calibrate.keep`
    best by the selection rule (within the screening bounds) are scored on the full sets; the others keep their
    screening scores (`stage: screen`) and cannot be chosen.
    """
    c = scorer.cfg.calibrate
    screened = "screen" in scorer.stages and c.keep < len(points)
    finalists = set(range(len(points)))
    rows: list[dict[str, Any]] = [{} for _ in points]
    if screened:
        refs = scorer.references("screen")
        b = _bounds(c, refs)
        for i, point in enumerate(points):
            rows[i] = row_for(point, point.name, scorer.score(scorer.merge(point), "screen"))
        finalists = set(rank(rows, b)[: c.keep])
        log.info("calibrate: screened %d points, %d go to the full sets", len(points), len(finalists))
    for i in sorted(finalists):
        screen = rows[i]
        rows[i] = row_for(points[i], points[i].name, scorer.score(scorer.merge(points[i])))
        if screen:
            rows[i]["screen"] = {k: screen[k] for k in COLUMN.values()}
        log.info(
            "calibrate %s: HS %.1f OR %.1f FA %.1f",
            *(points[i].name, rows[i]["hs"], rows[i]["over_refusal"], rows[i]["fa"]),
        )
    return rows, scorer.references("full")


def _bounds(c: Any, refs: dict[str, dict[str, Any]]) -> Bounds:
    return bounds(
        refs["paper"]["hs"],
        refs["user"]["fa"],
        hs_max=c.hs_max,
        hs_margin=c.hs_margin,
        fa_delta=c.fa_delta,
        or_tolerance=c.over_refusal_tolerance,
    )


# ---------------------------------------------------------------- run


def calibrate(cfg: Config, *, own_user_run: bool = False) -> Path:
    """The chosen merge of `merge.user` and `merge.reinforce`, written at `merge.out`; `own_user_run` as in
    `bnr.runs.merge.merge_run` (true from `bnr-calibrated`'s finalize, false for `bnr calibrate`)."""
    started = time.time()
    c, m = cfg.calibrate, cfg.merge
    if not is_complete(m.user):
        raise BnrError(f"calibrate needs a finished bnr user run at merge.user={m.user!r} (its data manifest)")
    protocol = PROTOCOLS.get(cfg.eval.protocol)
    roles = benchmark_roles(cfg)
    evaluation = evaluation_records(cfg, protocol)
    calib = calibration_sets(cfg)
    check_disjoint(calib, evaluation)
    paper = MergePoint(m.scale, m.scale, m.alpha)  # always a candidate: calibration never loses to the paper
    points = [paper, *(p for p in search_grid(c.user_scales, c.reinforce_scales, c.alphas, c.layers) if p != paper)]
    with tempfile.TemporaryDirectory(prefix="bnr-calibrate-") as tmp:
        files = {role: Path(tmp) / f"calibration_{role}.jsonl" for role in ROLES}
        stages = {"full": calibration_benchmarks(cfg, protocol, roles, _write_sets(calib, files))}
        if c.screen_fraction is not None:
            frac = c.screen_fraction
            screen = {role: recs[: max(1, math.ceil(frac * len(recs)))] for role, recs in calib.items()}
            screen_files = {role: Path(tmp) / "screen" / f.name for role, f in files.items()}
            stages["screen"] = calibration_benchmarks(cfg, protocol, roles, _write_sets(screen, screen_files))
        scorer = _scorer(cfg, protocol, stages)
        rows, refs = search(scorer, points)
        return _write(cfg, rows, refs, points, calib, evaluation, files, started, scorer.generated, own_user_run)


def _write_sets(sets: dict[str, list[Record]], files: dict[str, Path]) -> dict[str, Path]:
    for role, recs in sets.items():
        files[role].parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(files[role], recs)
    return files


def _scorer(cfg: Config, protocol: Protocol, stages: dict[str, dict[str, Benchmark]]) -> Scorer:
    from bnr.lora_files import read_lora
    from bnr.models import load_model_and_tokenizer, model_identity

    user, reinforce = read_lora(cfg.merge.user), read_lora(cfg.merge.reinforce)
    base = cfg.model.name_or_path or user.base_model_name_or_path
    if not base:
        raise BnrError("calibrate needs the base model: set model.name_or_path")
    model_cfg = dataclasses.replace(cfg.model, name_or_path=base)
    model, tokenizer = load_model_and_tokenizer(model_cfg)
    cache = ResponseCache(cfg.calibrate.cache) if cfg.calibrate.cache else None
    return Scorer(cfg, protocol, stages, model, tokenizer, user, reinforce, model_identity(model_cfg), cache)


def _write(
    cfg: Config,
    rows: list[dict[str, Any]],
    refs: dict[str, dict[str, Any]],
    points: list[MergePoint],
    calib: dict[str, list[Record]],
    evaluation: dict[str, list[Record]],
    files: dict[str, Path],
    started: float,
    generated: int,
    own_user_run: bool,
) -> Path:
    from bnr.data.mix import data_manifest
    from bnr.eval.plots import plot_calibration
    from bnr.runs.merge import merge_run

    c = cfg.calibrate
    b = _bounds(c, refs)
    final = [i for i, r in enumerate(rows) if r["stage"] == "full"]
    pick, feasible = select([rows[i] for i in final], b)
    best = final[pick]
    if not feasible:
        log.warning("calibrate: no point meets HS <= %.1f and FA >= %.1f; writing the closest one", b.hs_max, b.fa_min)
    front = {final[i] for i in pareto_front([rows[i] for i in final])}
    for i, r in enumerate(rows):
        r.update(pareto=i in front, chosen=i == best)
    chosen = points[best]
    wall = time.time() - started
    user_train = float(read_manifest(cfg.merge.user).get("training", {}).get("train_wall_time_s") or 0.0)
    cost = {
        "calibration_wall_time_s": round(wall, 2),
        "points": len(points) + len(refs),
        "completions_generated": generated,
        "user_train_wall_time_s": user_train,
        "ratio_to_user_training": round(wall / user_train, 3) if user_train else None,
    }
    log.info(
        "calibrate: chose %s (feasible=%s); %.1f s vs the user's training %.1f s",
        chosen.name,
        feasible,
        wall,
        user_train,
    )
    summary = {
        "chosen": {**chosen.knobs(), "name": chosen.name, **{k: rows[best][k] for k in COLUMN.values()}},
        "feasible": feasible,
        "bounds": dataclasses.asdict(b),
        "references": refs,
        "cost": cost,
        "benchmarks": {role: str(f.name) for role, f in files.items()},
    }
    ids = {
        "calibration": {role: data_manifest(recs) for role, recs in calib.items()},
        "evaluation": {name: {"count": len(recs), "ids": [r.id for r in recs]} for name, recs in evaluation.items()},
    }

    def write_extra(out: Path) -> None:
        for f in files.values():
            shutil.copy(f, out / f.name)
        if c.plot:
            sizes = ", ".join(f"{role} {len(recs)}" for role, recs in calib.items())
            plot_calibration(rows, refs, out / PLOT, f"n = {sizes} prompts; seed {cfg.seed}")

    merge = dataclasses.replace(cfg.merge, **chosen.knobs())
    return merge_run(
        dataclasses.replace(cfg, merge=merge),
        extra_diagnostics={"calibration": {**summary, "table": rows}},
        extra_manifest={"calibration": {**summary, "data": ids}},
        write_extra=write_extra,
        own_user_run=own_user_run,
    )
