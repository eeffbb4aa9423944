"""A bnr user job trained by someone else's loop: the model, the data and the deliverable, as plain functions.

    job = user_job("toy", ["user.buffer=runs/buffer", "merge.reinforce=runs/reinforce", "user.out=runs/mine"])
    model, tokenizer = user_model(job)           # buffer merged + frozen, fresh UserLoRA trainable (a PeftModel)
    records = user_records(job, my_dataset)      # a datasets.Dataset, rows, Records or a file; None: the config's
    trainer = SFTTrainer(model=model, train_dataset=sft_dataset(job, tokenizer, records), processing_class=tokenizer,
                         callbacks=defense_callbacks(job, model, tokenizer, records), args=SFTConfig(...))
    trainer.train()
    final = deliverable(job, model, records)      # a bnr `user` run at user.out, then the defense's finalize

Every step is bnr's own: `prepare_model`, `user_data` and `finalize` are the defense's hooks (for `bnr`: the
ReinforceLoRA merged with `merge.*` by `bnr merge`'s code), the UserLoRA passes the buffer guard, and both runs get
bnr's manifest and model card. Only the training loop is the caller's.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnr import adapters, guard
from bnr.artifacts import ADAPTER_CONFIG
from bnr.config import Config, load_config
from bnr.data.mix import build_user_mix, data_manifest
from bnr.data.records import Record, load_file
from bnr.data.sources import load_records
from bnr.data.templates import build_prompt
from bnr.defenses import UserJob, canonical_name
from bnr.errors import BnrError


def user_job(config: Config | str, overrides: Sequence[str] = ()) -> UserJob:
    """The user job of a config (a `Config`, or a preset name / YAML path) with `key=value` overrides: its defense
    (`user.defense`), the defense's options and where its provider artifacts are (`user.buffer`, ...)."""
    from bnr.config import deep_merge, from_dict, parse_overrides, to_dict
    from bnr.orchestrate.userjob import make_job

    if isinstance(config, str):
        cfg = load_config(config, list(overrides))
    else:
        cfg = from_dict(deep_merge(to_dict(config), parse_overrides(list(overrides)))) if overrides else config
    return make_job(cfg)


def user_model(job: UserJob) -> tuple[Any, Any]:
    """(model, tokenizer) ready to train: the base with the defense's frozen adapters attached (for `bnr`, the
    provider's BufferLoRA merged into the weights and frozen, `user.buffer_mode`) and a fresh UserLoRA
    (`user.lora`, seeded by `seed`) whose weights alone require grad: a `peft.PeftModel` TRL's `SFTTrainer` and
    `transformers.Trainer` take as is (pass no `peft_config`)."""
    from bnr.models import load_model_and_tokenizer
    from bnr.orchestrate.userjob import check_artifacts
    from bnr.seeding import seed_everything

    check_artifacts(job, job.defense.requires)  # fail before training, not after it
    seed_everything(job.seed)  # before the LoRA is built: its init depends on the seed alone, as in `bnr finetune`
    model, tokenizer = load_model_and_tokenizer(job.cfg.model, for_training=True)
    model = job.defense.prepare_model(job, model)
    if adapters.USER not in getattr(model, "peft_config", {}):
        raise TypeError(f"defense {job.defense.name!r}: prepare_model must return a PeftModel with the UserLoRA")
    return model, tokenizer


def user_records(job: UserJob, data: Any = None, *, fields: dict[str, str] | None = None) -> list[Record]:
    """The records to train on, after the defense's `user_data` hook (SafeInstruct adds its refusal pairs).

    `data`: a `datasets.Dataset`, a list of rows (canonical, chat `messages` or prompt/completion) or `Record`s, or
    a data file; None samples the config's user mix (`user.n`, `user.p`, `seed`), as `bnr finetune` does."""
    if data is None:
        stage = job.cfg.user
        harmful = load_records(stage.harmful_data) if stage.p > 0 else []
        records = build_user_mix(load_records(stage.benign_data), harmful, stage.n, stage.p, job.seed).records
    else:
        records = load_file(data, fields=fields)
    return list(job.defense.user_data(job, list(records)))


def sft_dataset(job: UserJob, tokenizer: Any, records: list[Record]) -> Any:
    """A prompt/completion `datasets.Dataset` of `records` in the job's prompt template (`template`), the format
    TRL's `SFTTrainer` trains on with the loss on the completion only, as bnr does."""
    import datasets

    prompts = [build_prompt(job.cfg.template, r, tokenizer) for r in records]
    return datasets.Dataset.from_dict(
        {"id": [r.id for r in records], "prompt": prompts, "completion": [r.output for r in records]}
    )


def defense_callbacks(job: UserJob, model: Any, tokenizer: Any, records: list[Record]) -> list[Any]:
    """The `transformers.TrainerCallback`s that run the defense's step hooks (none for `bnr` and `sft`); an error
    for a defense whose loss or batch stream only bnr's loop can change."""
    from bnr.data.tokenize import encode_records
    from bnr.integrations.callbacks import StepHooksCallback

    examples = encode_records(tokenizer, records, job.cfg.template, job.cfg.max_length)
    hooks = job.defense.training_hooks(job, model, tokenizer, examples)
    if hooks.loss_fn is not None or hooks.batch_source is not None:
        raise BnrError(
            f"defense {job.defense.name!r} changes the loss or the batch stream, which a TrainerCallback cannot; "
            "train it with `bnr finetune` (or bnr.train.train), or pick a defense whose hooks are step callbacks"
        )
    return [StepHooksCallback(hooks.callbacks)] if hooks.callbacks else []


def adapter_folder(path: str | Path) -> Path:
    """The folder holding the UserLoRA's `adapter_config.json`: `path` itself, or the `user/` subfolder that
    `PeftModel.save_pretrained` (and `Trainer.save_model`) writes for an adapter named `user`."""
    p = Path(path)
    for cand in (p, p / adapters.USER):
        if (cand / ADAPTER_CONFIG).is_file():
            return cand
    raise BnrError(f"{str(p)!r} holds no PEFT adapter ({ADAPTER_CONFIG} missing); give the trainer's output folder")


def deliverable(job: UserJob, adapter: Any, records: list[Record] | None = None, **training: Any) -> Path:
    """Turn a trained UserLoRA into the defense's deliverable and return its path.

    `adapter`: the trained `PeftModel` (as returned by `user_model`) or the folder its adapter was saved to. The
    UserLoRA is written as a bnr `user` run at `user.out` (PEFT files, manifest with the data `records` and the
    `training` facts given, model card), refused if its tensors are the provider's buffer, then finalized by the
    defense (`bnr`: merged with the ReinforceLoRA at `user.final_out`, with its own manifest and card)."""
    from bnr.orchestrate.userjob import finalize
    from bnr.runs.opening import open_run
    from bnr.runs.writer import discard_unstarted

    cfg = job.cfg
    writer = open_run(cfg, cfg.user.out, "user")
    try:
        if isinstance(adapter, str | Path):
            for f in adapter_folder(adapter).iterdir():
                if f.is_file():
                    shutil.copy(f, writer.tmp / f.name)
        else:
            adapters.save_adapter(adapter, adapters.USER, writer.tmp)
        guard.assert_path_not_buffer(writer.tmp, "deliverable")
    except BaseException:
        discard_unstarted()  # the refused adapter leaves no partial run behind
        raise
    user_run = writer.finalize(_user_manifest(job, records, training))
    return finalize(job, user_run)


def _user_manifest(job: UserJob, records: list[Record] | None, training: dict[str, Any]) -> dict[str, Any]:
    from bnr.runs.opening import manifest_for

    cfg, used = job.cfg, {name: job.providers[name] for name in job.defense.train_artifacts}
    return manifest_for(
        cfg,
        parents=[(name, str(path)) for name, path in used.items()],
        data=data_manifest(records) if records is not None else {},
        training={"loop": "external", **training},
        adapter=adapters.USER,
        defense=canonical_name(cfg.user.defense),
        defense_options=dataclasses.asdict(job.options),
        defense_notes=job.notes,
        trained_with_buffer="buffer" in used,
        buffer_mode=cfg.user.buffer_mode if "buffer" in used else None,
        contains_buffer=False,
    )
