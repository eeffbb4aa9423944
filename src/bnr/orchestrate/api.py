"""The Python API: plain-argument entry points over the orchestration layer (docs/python.md).

A notebook, a service worker or an attack harness calls these with paths, knobs and config sections instead of a
rewritten root config; the CLI's recipes call the same code (`bnr.orchestrate.userjob`, `.providers`,
`.evaluate`). `settings` is the provider's configuration (a loaded preset, `bnr.config.load_config("toy")`):
everything the job's arguments do not name (LoRA ranks, the loop's defaults, the merge, calibration and
evaluation sections) comes from it.

- `build_provider_artifacts(names, root)`: the provider's artifacts (buffer, reinforce, ...), built or reused;
- `fine_tune(data, out=...)`: one user job - train the UserLoRA through the defense, finalize the deliverable
  (`job_config`: the validated configuration it runs);
- `merge(user, reinforce, out=...)`: a merge run of a UserLoRA and a ReinforceLoRA;
- `evaluate(target, out=...)`: an evaluation run of a deliverable, an adapter folder or a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnr.attacks import Knobs, train_config
from bnr.config import Config, DataConfig, MergeConfig, ModelConfig, TrainConfig, validate
from bnr.data.records import Record, records_from_data, write_jsonl
from bnr.data.sources import load_records
from bnr.defenses import PROVIDERS  # importing the plug-ins registers their provider stages
from bnr.errors import BnrError

EventHook = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class JobKnobs:
    """What the user of a fine-tuning service sets (the OpenAI fine-tuning API's hyperparameters and seed); None
    keeps the provider's value from `settings.user.train` / `settings.seed`."""

    n_epochs: float | None = None
    batch_size: int | None = None
    learning_rate_multiplier: float | None = None
    seed: int | None = None


# the knobs a customer tunes to attack (every JobKnobs field but the seed): `bnr attack-search`'s space, each
# within the base's `job_api` bounds (`bnr.config.JobApiConfig`, which the service checks a job against)
TUNABLE_KNOBS = tuple(f.name for f in dataclasses.fields(JobKnobs) if f.name != "seed")


@dataclass(frozen=True)
class JobResult:
    """A finished user job: the UserLoRA run, and the deliverable (the same path when the defense delivers it)."""

    user_run: Path
    deliverable: Path


def _settings(settings: Config | None, model: ModelConfig | None) -> Config:
    cfg = settings if settings is not None else Config()
    return dataclasses.replace(cfg, model=model) if model is not None else cfg


def _data_config(data: str | Path | DataConfig | Sequence[Record], out: Path) -> DataConfig:
    """A file source for the job's data; records given in memory are written to `<out>-data.jsonl` first."""
    if isinstance(data, DataConfig):
        return data
    if isinstance(data, (str, Path)):
        return DataConfig(path=str(data))
    if len(data) == 0:
        raise BnrError("fine_tune: the training data is empty; give at least one record")
    records = records_from_data(data)  # Records, rows (dicts) or a datasets.Dataset
    path = out.parent / f"{out.name}-data.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, records)
    return DataConfig(path=str(path))


def apply_knobs(train: TrainConfig, knobs: JobKnobs) -> TrainConfig:
    """The provider's user training loop with the user's knobs applied (as an attack's own knobs are:
    `bnr.attacks.train_config`)."""
    mult = 1.0 if knobs.learning_rate_multiplier is None else knobs.learning_rate_multiplier
    return train_config(train, Knobs(lr_multiplier=mult, epochs=knobs.n_epochs, batch_size=knobs.batch_size))


def _placed(cfg: Config, providers: Mapping[str, str | Path] | None) -> Config:
    """`cfg` reading each provider artifact (name -> run directory) from where it is."""
    for name, path in (providers or {}).items():
        cfg = PROVIDERS.get(name).place(cfg, str(path))
    return cfg


def job_config(
    data: str | Path | DataConfig | Sequence[Record],
    *,
    out: str | Path,
    defense: str = "bnr",
    defense_options: Mapping[str, Any] | None = None,
    providers: Mapping[str, str | Path] | None = None,
    knobs: JobKnobs | None = None,
    model: ModelConfig | None = None,
    settings: Config | None = None,
    final_out: str | Path | None = None,
    resume: bool = True,
) -> Config:
    """The validated configuration of one user job (what `fine_tune` runs).

    `data` is the user's training set, every record of it trained on (n = their count, no harmful share drawn by
    bnr): a JSONL/JSON/CSV file, a `DataConfig`, or in memory `Record`s, rows (dicts) or a `datasets.Dataset`
    (written to `<out>-data.jsonl`). The UserLoRA run goes to `out`, the deliverable to `final_out` (default
    `<out>-final`, for defenses that write one). `defense_options` are the defense's options (`defenses.<name>`);
    `providers` the provider artifacts it reads (name -> run directory, e.g. {"buffer": ..., "reinforce": ...});
    `knobs` the user's; `settings` and `model` the provider's configuration. With `resume`, an interrupted run
    resumes from its checkpoint when its key matches.
    """
    cfg, knobs = _settings(settings, model), knobs or JobKnobs()
    data_cfg = _data_config(data, Path(out))
    user = dataclasses.replace(
        cfg.user,
        defense=defense,
        benign_data=data_cfg,
        harmful_data=DataConfig(),
        n=len(load_records(data_cfg)),
        p=0.0,
        train=apply_knobs(cfg.user.train, knobs),
        out=str(out),
        final_out=None if final_out is None else str(final_out),
    )
    options = {**cfg.defenses, defense: dict(defense_options)} if defense_options is not None else cfg.defenses
    seed = cfg.seed if knobs.seed is None else knobs.seed
    cfg = _placed(dataclasses.replace(cfg, user=user, defenses=options, seed=seed, resume=resume), providers)
    validate(cfg)
    return cfg


def fine_tune(
    data: str | Path | DataConfig | Sequence[Record],
    *,
    reuse: bool = True,
    on_event: EventHook | None = None,
    **job: Any,
) -> JobResult:
    """Run one user fine-tuning job: train the UserLoRA through the defense (hooks 1-3), then finalize the
    deliverable. `data` and the keywords `job` - `out` (required), `defense`, `defense_options`, `providers`,
    `knobs`, `model`, `settings`, `final_out`, `resume` - are `job_config`'s.

    With `reuse`, a complete run at `out` (or `final_out`) made from the same inputs - the same stage key - is
    returned without training again. `on_event(event)` receives dicts: `{"event": "stage", "stage": "user" |
    "final", "status": "started" | "reused" | "done", "path": ...}` and every training log record as
    `{"event": "train", ...}` (step, loss, lr).
    """
    from bnr.orchestrate.userjob import run_user_job

    user_run, deliverable = run_user_job(job_config(data, **job), force=not reuse, on_event=on_event)
    return JobResult(user_run, deliverable)


def build_provider_artifacts(
    names: Sequence[str],
    root: str | Path,
    *,
    model: ModelConfig | None = None,
    settings: Config | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """The provider artifacts `names` (and their parents) at `<root>/<name>`, each built or reused while its
    stage key is unchanged; name -> run directory, to pass as `fine_tune(providers=...)`."""
    from bnr.orchestrate.providers import build_providers
    from bnr.runs.providers import closure

    cfg = _settings(settings, model)
    placed = build_providers(cfg, tuple(names), lambda name, key: Path(root) / name, force=force)
    return {name: Path(PROVIDERS.get(name).locate(placed)) for name in closure(tuple(names))}


def merge(
    user: str | Path,
    reinforce: str | Path,
    *,
    out: str | Path,
    knobs: MergeConfig | None = None,
    model: ModelConfig | None = None,
    settings: Config | None = None,
) -> Path:
    """A merge run at `out`: ReinforceLoRA `reinforce` merged into UserLoRA `user` with `knobs` (method, scale,
    alpha, tau, strengths, layers; default the settings' `merge` section)."""
    from bnr.runs.merge import merge_run

    cfg = _settings(settings, model)
    section = dataclasses.replace(knobs or cfg.merge, user=str(user), reinforce=str(reinforce), out=str(out))
    return merge_run(dataclasses.replace(cfg, merge=section))


def evaluate(
    target: str | Path,
    *,
    out: str | Path,
    benchmarks: Sequence[str] | None = None,
    protocol: str | None = None,
    model: ModelConfig | None = None,
    settings: Config | None = None,
) -> dict[str, Any]:
    """Evaluate `target` (a run directory, a PEFT adapter folder or a model) into an evaluation run at `out`;
    returns its summary (`results`: benchmark -> its metrics). `benchmarks` / `protocol` default to the
    settings' `eval` section."""
    from bnr.eval.protocols import PROTOCOLS
    from bnr.eval.report import read_summary
    from bnr.eval.suite import build_benchmarks
    from bnr.orchestrate.evaluation import evaluate_run

    cfg = _settings(settings, model)
    ev = dataclasses.replace(
        cfg.eval,
        target=str(target),
        out=str(out),
        benchmarks=list(benchmarks) if benchmarks is not None else cfg.eval.benchmarks,
        protocol=protocol or cfg.eval.protocol,
    )
    cfg = dataclasses.replace(cfg, eval=ev)
    summary: dict[str, Any] = read_summary(evaluate_run(cfg, build_benchmarks(PROTOCOLS.get(ev.protocol), ev)))
    return summary
