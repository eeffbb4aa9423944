"""The user job: a defense's hooks in their fixed order, and its two stages, each reused while its key is unchanged.

user data -> prepare model -> train (with the defense's training hooks) -> save the UserLoRA run -> finalize
(`bnr.defenses.base`). `train_user` and `finalize` run one stage each; `run_user_job` runs both, reusing a stage
whose key (`user_key`, `final_key`: its config sections, the defense and its options, its parents' content
hashes) is unchanged. Only the UserLoRA is saved in the user run; a frozen adapter (the buffer) never enters it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnr import adapters, guard
from bnr.artifacts import is_complete
from bnr.attacks import attack_key, attack_options, build_attack_mix, get_attack, train_config
from bnr.config import Config
from bnr.data.mix import data_manifest
from bnr.data.sources import load_records
from bnr.defenses import PROVIDERS, UserJob, canonical_name, get_defense, options_for
from bnr.defenses.base import BUFFER, DEFAULT_FROM, FINALIZE_ONLY, REINFORCE
from bnr.errors import BnrError
from bnr.locations import without_locations
from bnr.models import load_model_and_tokenizer
from bnr.runs.fit import check_trained, fit, training_events
from bnr.runs.keys import is_current, keyed, keyed_run, section, stage_key, without_paths
from bnr.runs.opening import check_parent, check_same_base, manifest_for, open_run
from bnr.runs.writer import stage_clock

log = logging.getLogger(__name__)


def make_job(cfg: Config) -> UserJob:
    """The user job of `cfg`: its defense, the defense's options, where its provider artifacts are."""
    defense = get_defense(cfg.user.defense)
    options = options_for(cfg, cfg.user.defense)
    providers = {name: Path(PROVIDERS.get(name).locate(cfg)) for name in defense.requires}
    final_out = Path(cfg.user.final_out or f"{cfg.user.out}-final")
    return UserJob(cfg, defense, options, providers, final_out)


def check_artifacts(job: UserJob, names: tuple[str, ...]) -> None:
    """Each named provider artifact exists as a complete run on the job's base model."""
    for name in names:
        path = job.providers[name]
        if not is_complete(path):
            what = "missing parent run" if not path.exists() else "incomplete parent run"
            raise BnrError(
                f"{what} {str(path)!r}: defense {job.defense.name!r} needs the {name} artifact there; build it "
                f"(`bnr pipeline` builds every artifact a defense needs) or point "
                f"{PROVIDERS.get(name).config_key} at it"
            )
        if name in (BUFFER, REINFORCE):  # bnr's own stages: role, base and (buffer) content
            check_parent(path, name, PROVIDERS.get(name).config_key, job.cfg.model, content=name == BUFFER)
        else:
            check_same_base(path, job.cfg.model)


def train_user(job: UserJob) -> Path:
    """Hooks 1-3: the user's data through `user_data`, the model through `prepare_model`, the loop with
    `training_hooks`; writes the UserLoRA run at `user.out`."""
    cfg, stage, defense = job.cfg, job.cfg.user, job.defense
    check_artifacts(job, defense.train_artifacts)
    benign = load_records(stage.benign_data)
    uses_harmful = get_attack(stage.attack).uses_harmful
    harmful = load_records(stage.harmful_data) if stage.p > 0 and uses_harmful else []
    mix = build_attack_mix(cfg, benign, harmful)  # the customer's file: `user.attack` (default harmful-mix)
    records = defense.user_data(job, list(mix.records))
    writer = open_run(cfg, stage.out, "user", key=lambda: user_key(job))
    job.work_dir = writer.tmp
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    model = defense.prepare_model(job, model)
    if adapters.USER not in getattr(model, "peft_config", {}):
        raise TypeError(f"defense {defense.name!r}: prepare_model must return a PeftModel with the UserLoRA")
    training = fit(
        model,
        tokenizer,
        records,
        cfg,
        train_config(stage.train, attack_options(cfg)),  # the job knobs the attack chose
        writer,
        f"user[{defense.name}]",
        hooks_for=lambda examples: defense.training_hooks(job, model, tokenizer, examples),
    )
    adapters.save_adapter(model, adapters.USER, writer.tmp)
    check_trained(writer.tmp, "bnr finetune")
    guard.assert_path_not_buffer(writer.tmp, "finetune", cfg.guard)
    used = {name: job.providers[name] for name in defense.train_artifacts}
    data = mix.manifest if records == mix.records else {**mix.manifest, "trained_on": data_manifest(records)}
    manifest = manifest_for(
        cfg,
        parents=[(name, str(path)) for name, path in used.items()],
        data=data,
        training=training,
        adapter=adapters.USER,
        defense=canonical_name(stage.defense),
        defense_options=dataclasses.asdict(job.options),
        defense_notes=job.notes,
        trained_with_buffer="buffer" in used,
        buffer_mode=stage.buffer_mode if "buffer" in used else None,
        contains_buffer=False,
    )
    return writer.finalize(manifest)


def finalize(job: UserJob, user_run: Path, key: str | None = None) -> Path:
    """Hook 4: the deliverable made from the complete UserLoRA run (a run the hook writes at `final_out` records
    the final stage's key, `key` or else `final_key`)."""
    check_artifacts(job, job.defense.final_artifacts)
    # the deliverable's wall_time_s covers the hook's work before it opens its run folder
    with stage_clock(), keyed(job.final_out, key or final_key(job, user_run)):
        return job.defense.finalize(job, user_run)


def options_key(options: Any, training: bool) -> dict[str, Any]:
    """A defense's resolved options as they enter a stage key: without the fields that say where a stage writes
    or reads by path (`bnr.locations`), an option filled from another section (`from_section`) as the sections
    a key hold it; for the UserLoRA (`training`), without the options that shape finalize only."""
    out = without_locations(options)
    for f in dataclasses.fields(options):
        if training and f.metadata.get(FINALIZE_ONLY):
            del out[f.name]
        elif f.metadata.get(DEFAULT_FROM):
            out[f.name] = without_paths(getattr(options, f.name))
    return out


def _defense_extra(job: UserJob, training: bool) -> dict[str, Any]:
    name, options = canonical_name(job.cfg.user.defense), job.options
    if training and job.defense.trains_like:  # trains exactly like that defense: its own options shape finalize only
        name, options = canonical_name(job.defense.trains_like), options_for(job.cfg, job.defense.trains_like)
    return {"defense": name, "options": options_key(options, training)}


def user_key(job: UserJob) -> str:
    """The UserLoRA stage: the `user` section, the defense and its options (what its hooks read beyond `user`),
    the attack and the provider artifacts used in training."""
    d = job.defense
    parents: dict[str, str | Path] = {n: job.providers[n] for n in d.train_artifacts}
    user = {k: v for k, v in section(job.cfg, "user").items() if k != "defense"}  # the defense enters by training
    # the attack's name is in `user`; its options (absent for the default attack) enter beside it
    return stage_key(job.cfg, (), parents, {**_defense_extra(job, True), "user": user, **attack_key(job.cfg)})


def final_key(job: UserJob, user_run: Path) -> str:
    """The finalize stage: the UserLoRA run's content, the artifacts finalize reads, the defense and its options."""
    d = job.defense
    parents: dict[str, str | Path] = {"user": user_run, **{n: job.providers[n] for n in d.final_artifacts}}
    return stage_key(job.cfg, (), parents, _defense_extra(job, False))


def run_user_job(
    cfg: Config,
    *,
    force: bool = False,
    user_root: Path | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Path, Path]:
    """(UserLoRA run, deliverable) of the user job in `cfg`, each reused when its key is unchanged.

    With `user_root`, the UserLoRA run lives at `<user_root>/<key>` instead of `user.out`, so jobs that train
    alike (same config, same parents, defenses that declare `trains_like` each other) share one run.
    `on_event` receives each stage's start, reuse and end, and the training log records
    (`bnr.orchestrate.api.fine_tune` documents them)."""
    emit = on_event or (lambda event: None)
    job = make_job(cfg)
    check_artifacts(job, job.defense.requires)
    ukey = user_key(job)
    if user_root is not None:
        out = keyed_run(user_root / ukey, ukey)
        cfg = dataclasses.replace(cfg, user=dataclasses.replace(cfg.user, out=str(out)))
        job = dataclasses.replace(job, cfg=cfg)
    build_job = dataclasses.replace(job, cfg=dataclasses.replace(cfg, overwrite=True))
    if force or not is_current(cfg.user.out, ukey):
        emit({"event": "stage", "stage": "user", "status": "started", "path": cfg.user.out})
        with training_events(on_event), keyed(cfg.user.out, ukey):
            user = train_user(build_job)
        emit({"event": "stage", "stage": "user", "status": "done", "path": str(user)})
    else:
        log.info("user: reusing %s (config and parents unchanged)", cfg.user.out)
        user = Path(cfg.user.out)
        emit({"event": "stage", "stage": "user", "status": "reused", "path": str(user)})
    fkey = final_key(job, user)
    if not force and is_current(job.final_out, fkey):
        emit({"event": "stage", "stage": "final", "status": "reused", "path": str(job.final_out)})
        return user, job.final_out
    emit({"event": "stage", "stage": "final", "status": "started", "path": str(job.final_out)})
    final = finalize(build_job, user, fkey)
    emit({"event": "stage", "stage": "final", "status": "done", "path": str(final)})
    return user, final
