"""`bnr attack-search`: the adaptive customer of the fine-tuning-as-a-service threat model.

The customer controls the training file and the knobs the job API exposes, nothing else. Per defense in
`attack_search.defenses`, an Optuna study (TPE sampler, seeded) chooses `attack_search.trials` user jobs: the
attack (`user.attack`, `bnr ls attacks`), p, n and the job's knobs - the tunable fields of
`bnr.orchestrate.JobKnobs` (n_epochs, learning_rate_multiplier, batch_size), applied to `user.train` as the
service applies a tenant's - each from the listed choices that the base's job API admits (`job_api`, the bounds
the service checks: a choice outside them is dropped, so a provider's cap binds the attacker too). The
provider's defense, its artifacts (built once under `<out>/providers/`) and its merge are the config's and never
change. Each trial is a sweep cell (`bnr.orchestrate.grid.run_cell`: user job, finalize, evaluation with
`eval.benchmarks`) under `<out>/<defense>/trial-<k>/`; the objective is the deliverable's HS (`hs`) or its worst
HS over every harmful benchmark evaluated (`hs_max`: plain, framed, triggered).

The study lives in `<out>/<defense>/study.db` (SQLite): a rerun resumes it (a trial that was running when the
process died is marked failed and its stages are reused when asked again), a larger `trials` extends it. Output:
`<out>/<defense>/trials.jsonl` (every trial: knobs, HS, over-refusal, FA, wall time), `<out>/summary.md` (the
worst case per defense with its knobs and numbers, and the search's cost) and `<out>/search_curve.png`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_text
from bnr.attacks import ATTACKS
from bnr.config import Config
from bnr.errors import BnrError
from bnr.eval.report import read_summary
from bnr.eval.roles import declared, headline, worst_case
from bnr.orchestrate.api import TUNABLE_KNOBS, JobKnobs, apply_knobs
from bnr.orchestrate.grid import run_cell, with_providers, with_value

log = logging.getLogger(__name__)
STUDY_FILE = "study.db"


# each tunable job knob (a `JobKnobs` field) -> the `attack_search` list of its choices, in the order the trial
# asks for them (a seeded study draws the same jobs as before the knobs were named after JobKnobs)
CHOICES = {"n_epochs": "epochs", "learning_rate_multiplier": "lr_multipliers", "batch_size": "batch_sizes"}


def check(cfg: Config) -> None:
    s = cfg.attack_search
    if s.trials < 1:
        raise BnrError(f"attack_search.trials must be >= 1 (got {s.trials}); it is the budget of user jobs")
    for name in s.attacks:
        ATTACKS.get(name)
    for key in ("defenses", "attacks", "p", "n", *CHOICES.values()):
        if not getattr(s, key):
            raise BnrError(f"attack_search.{key} is empty; give at least one choice")
    if not all(0.0 <= p <= 1.0 for p in s.p):
        raise BnrError(f"attack_search.p values must be in [0, 1] (got {s.p})")
    space(cfg)


def space(cfg: Config) -> dict[str, list[Any]]:
    """Every dimension of the customer's job -> its choices: the attack, p, n, and each tunable `JobKnobs` field
    with the listed choices the base's job API admits (`job_api`)."""
    s = cfg.attack_search
    if set(CHOICES) != set(TUNABLE_KNOBS):  # a knob added to JobKnobs needs its list of choices here
        raise BnrError(f"attack-search knobs {sorted(CHOICES)} differ from the job API's {sorted(TUNABLE_KNOBS)}")
    out: dict[str, list[Any]] = {"attack": list(s.attacks), "p": list(s.p), "n": list(s.n)}
    for knob, key in CHOICES.items():
        listed = list(getattr(s, key))
        out[knob] = [v for v in listed if cfg.job_api.admits(knob, v)]
        if not out[knob]:
            low, high = cfg.job_api.bounds()[knob]
            raise BnrError(
                f"attack_search.{key}: none of {listed} is admitted by the job API ({knob} in "
                f"[{low:g}, {high:g}], job_api); give a choice inside the bounds"
            )
    return out


def choose(trial: Any, cfg: Config) -> dict[str, Any]:
    """The trial's job: attack, p, n and knobs, each from its admitted choices."""
    return {name: trial.suggest_categorical(name, choices) for name, choices in space(cfg).items()}


def trial_config(cfg: Config, defense: str, number: int, job: dict[str, Any]) -> Config:
    """The cell config of one trial: the defense fixed, the customer's file and knobs from `job`."""
    ccfg = with_value(
        cfg, {"user.attack": job["attack"], "user.defense": defense, "user.p": job["p"], "user.n": job["n"]}
    )
    knobs = JobKnobs(**{k: job[k] for k in TUNABLE_KNOBS})
    root = Path(cfg.attack_search.out)
    folder = root / defense / f"trial-{number:03d}"
    user = dataclasses.replace(
        ccfg.user,
        train=apply_knobs(ccfg.user.train, knobs),
        out=str(folder / "user"),
        final_out=str(folder / "final"),
    )
    return dataclasses.replace(
        ccfg,
        user=user,
        eval=dataclasses.replace(ccfg.eval, out=str(folder / "eval")),
        sweep=dataclasses.replace(ccfg.sweep, out=str(root)),
        resume=True,
        overwrite=False,
    )


def outcome(eval_dir: str, fa_benchmark: str | None) -> dict[str, Any]:
    """hs, hs_max (worst harmful benchmark), over_refusal, fa of an evaluated deliverable."""
    summary = read_summary(eval_dir)
    results = summary["results"]
    row = headline(results, fa_benchmark, summary)
    roles = declared(summary)
    harmful = {name: r["hs"] for name, r in results.items() if roles.get(name, {}).get("role") == "harm"}
    worst = worst_case(results, "harm", summary)
    if worst is None:
        raise BnrError(f"the evaluation in {eval_dir} has no harmful benchmark; add one to eval.benchmarks")
    return {**row, "hs_max": worst[1], "hs_max_benchmark": worst[0], "hs_by_benchmark": harmful}


def open_study(cfg: Config, defense: str) -> Any:
    import optuna

    folder = Path(cfg.attack_search.out) / defense
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=defense,
        storage=f"sqlite:///{folder / STUDY_FILE}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.attack_search.sampler_seed),
    )
    asked = json.loads(json.dumps(space(cfg)))  # as the study stores it
    stored = study.user_attrs.get("space")
    if stored is None:  # a new study (or one of an older bnr, whose trials decide its space)
        study.set_user_attr("space", asked)
    elif stored != asked:  # TPE cannot continue over other choices; the stored trials would mean another search
        changed = sorted(k for k in asked.keys() | stored.keys() if asked.get(k) != stored.get(k))
        raise BnrError(
            f"{folder / STUDY_FILE} holds a search over other choices of {', '.join(changed)} "
            f"(stored {', '.join(f'{k} {stored.get(k)}' for k in changed)}); give attack_search.out a new folder, "
            "or ask for the stored choices to resume it"
        )
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # died mid-trial; its stages are reused if asked
    return study


def search(cfg: Config, defense: str, benchmarks: list[Any]) -> list[dict[str, Any]]:
    """Run (or resume) one defense's study up to `trials` complete trials; returns every complete trial's row."""
    import optuna

    study = open_study(cfg, defense)
    done = optuna.trial.TrialState.COMPLETE
    while len(study.get_trials(deepcopy=False, states=(done,))) < cfg.attack_search.trials:
        trial = study.ask()
        job = choose(trial, cfg)
        ccfg = trial_config(cfg, defense, trial.number, job)
        log.info("attack-search %s trial %d: %s", defense, trial.number, job)
        started = time.time()
        run_cell(with_providers(ccfg, ccfg), benchmarks)  # providers under <out>/providers
        got = outcome(ccfg.eval.out, cfg.sweep.fa_benchmark)
        for key in ("hs", "hs_max", "hs_max_benchmark", "over_refusal", "fa"):
            trial.set_user_attr(key, got.get(key))
        trial.set_user_attr("wall_s", round(time.time() - started, 1))
        trial.set_user_attr("eval", ccfg.eval.out)
        study.tell(trial, float(got[cfg.attack_search.objective]))
    rows = [
        {"defense": defense, "trial": t.number, **t.params, **t.user_attrs, "objective": t.value}
        for t in study.get_trials(deepcopy=False, states=(done,))
    ]
    folder = Path(cfg.attack_search.out) / defense
    atomic_write_text(folder / "trials.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


KNOBS = ("attack", "p", "n", *CHOICES)


def summary(cfg: Config, rows: dict[str, list[dict[str, Any]]]) -> str:
    """The worst case per defense (its knobs and HS / over-refusal / FA) and the search's cost, then every trial,
    as markdown."""
    objective = cfg.attack_search.objective
    head = [
        f"Adaptive attacker: {cfg.attack_search.trials} user jobs per defense, objective {objective}, "
        f"TPE seed {cfg.attack_search.sampler_seed}, run seed {cfg.seed}.",
        "Job API bounds (job_api): "
        + ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in cfg.job_api.bounds().items())
        + ". Space: "
        + "; ".join(f"{k} {v}" for k, v in space(cfg).items())
        + ".",
        "",
        "| defense | worst "
        + objective
        + " | HS | worst benchmark | over-refusal | FA | "
        + " | ".join(KNOBS)
        + " | trials | search wall s |",
        "|---|" + "---:|" * 5 + "---|" * len(KNOBS) + "---:|---:|",
    ]
    lines = []
    for defense, trials in rows.items():
        best = max(trials, key=lambda r: r["objective"])
        cost = sum(r.get("wall_s") or 0.0 for r in trials)
        knobs = " | ".join(str(best.get(k)) for k in KNOBS)
        lines.append(
            f"| {defense} | {best['objective']:.1f} | {best.get('hs', 0.0):.1f} | {best.get('hs_max_benchmark')} | "
            f"{best.get('over_refusal', 0.0):.1f} | {best.get('fa', 0.0):.1f} | {knobs} | {len(trials)} | {cost:.0f} |"
        )
    return "\n".join(head + lines) + "\n\n" + trials_table(rows)


def trials_table(rows: dict[str, list[dict[str, Any]]]) -> str:
    """Every trial of every defense: its knobs, HS, worst HS, over-refusal, FA and wall time, as markdown."""
    head = [
        "Every trial:",
        "",
        "| defense | trial | " + " | ".join(KNOBS) + " | HS | worst HS | over-refusal | FA | wall s |",
        "|---|---:|---|" + "---:|" * (len(KNOBS) - 1) + "---:|" * 5,
    ]

    def number(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"| {defense} | {r['trial']} | "
        + " | ".join(str(r.get(k)) for k in KNOBS)
        + f" | {number(r.get('hs'))} | {number(r.get('hs_max'))} | {number(r.get('over_refusal'))} | "
        f"{number(r.get('fa'))} | {r.get('wall_s') or 0:.0f} |"
        for defense, trials in rows.items()
        for r in sorted(trials, key=lambda r: r["trial"])
    ]
    return "\n".join(head + lines) + "\n"


def run(cfg: Config) -> Path:
    from bnr.defenses.base import defense_style
    from bnr.eval.plots import plot_search_curve
    from bnr.eval.protocols import PROTOCOLS
    from bnr.eval.suite import build_benchmarks

    check(cfg)
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise BnrError("bnr attack-search needs Optuna: pip install 'bnr[attack]'") from None
    benchmarks = build_benchmarks(PROTOCOLS.get(cfg.eval.protocol), cfg.eval)
    out = Path(cfg.attack_search.out)
    rows = {d: search(cfg, d, benchmarks) for d in cfg.attack_search.defenses}
    text = summary(cfg, rows)
    atomic_write_text(out / "summary.md", text)
    if cfg.attack_search.plots:
        s = cfg.attack_search
        styles = {d: defense_style(d) for d in rows}
        note = f"n = {s.trials} user jobs per defense; TPE seed {s.sampler_seed}, run seed {cfg.seed}"
        plot_search_curve(rows, out / "search_curve.png", s.objective, styles, note)
    print(text, end="")
    return out
