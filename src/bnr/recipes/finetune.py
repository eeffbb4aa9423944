"""A user fine-tuning job through its defense's hooks (`bnr.defenses.base`), in their fixed order:

user data -> prepare model -> train (with the defense's training hooks) -> save the UserLoRA run -> finalize.
`bnr finetune` runs all of them and prints the deliverable; `pipeline` and `sweep` call `train_user` and
`finalize` separately so each can be reused. Only the UserLoRA is saved in the user run; a frozen adapter
(the buffer) never enters it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from bnr import adapters, guard
from bnr.artifacts import is_complete, stage_clock
from bnr.attacks import attack_options, build_attack_mix, get_attack, train_config
from bnr.config import Config
from bnr.data.mix import data_manifest
from bnr.data.sources import load_records
from bnr.defenses import PROVIDERS, UserJob, canonical_name, get_defense, options_for
from bnr.defenses.base import BUFFER, REINFORCE
from bnr.errors import BnrError
from bnr.models import load_model_and_tokenizer
from bnr.recipes.common import check_parent, check_same_base, fit, manifest_for, open_run

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
    writer = open_run(cfg, stage.out, "user")
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
    guard.assert_path_not_buffer(writer.tmp, "finetune")
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


def finalize(job: UserJob, user_run: Path) -> Path:
    """Hook 4: the deliverable made from the complete UserLoRA run."""
    check_artifacts(job, job.defense.final_artifacts)
    with stage_clock():  # the deliverable's wall_time_s covers the hook's work before it opens its run folder
        return job.defense.finalize(job, user_run)


def run(cfg: Config) -> Path:
    job = make_job(cfg)
    check_artifacts(job, job.defense.requires)  # fail before training, not after it
    deliverable = finalize(job, train_user(job))
    print(f"deliverable: {deliverable}")
    return deliverable
