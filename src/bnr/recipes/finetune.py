"""A user fine-tuning job: n samples with harmful ratio p, a fresh UserLoRA, plain cross-entropy.

With a buffer-using defense (`bnr`), the BufferLoRA is attached frozen - merged into the base weights
(the paper's zero-overhead way) or as a separate frozen adapter. Only the UserLoRA is saved; the
buffer never enters the output.
"""

from __future__ import annotations

from pathlib import Path

from bnr import adapters, guard
from bnr.config import Config
from bnr.data.mix import build_user_mix
from bnr.data.sources import load_records
from bnr.defenses import DEFENSES
from bnr.models import load_model_and_tokenizer, serving_name
from bnr.recipes.common import check_parent, fit, manifest_for, open_run


def run(cfg: Config) -> Path:
    stage = cfg.user
    defense = DEFENSES.get(stage.defense)
    if defense.uses_buffer:
        check_parent(stage.buffer, "buffer", "user.buffer", cfg.model, content=True)
    benign = load_records(stage.benign_data)
    harmful = load_records(stage.harmful_data) if stage.p > 0 else []
    mix = build_user_mix(benign, harmful, stage.n, stage.p, cfg.seed)
    writer = open_run(cfg, stage.out, "user")
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    active = [adapters.USER]
    if defense.uses_buffer:
        model = adapters.attach_frozen(model, stage.buffer, adapters.BUFFER, stage.buffer_mode)
        if stage.buffer_mode == "separate":
            active = [adapters.BUFFER, adapters.USER]
    model = adapters.add_adapter(model, adapters.USER, stage.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=active, trainable=[adapters.USER])
    training = fit(model, tokenizer, mix.records, cfg, stage.train, writer, f"user[{defense.name}]")
    adapters.save_adapter(model, adapters.USER, writer.tmp)
    guard.assert_path_not_buffer(writer.tmp, "finetune")
    parents = [("buffer", stage.buffer)] if defense.uses_buffer else []
    manifest = manifest_for(
        cfg,
        parents=parents,
        data=mix.manifest,
        training=training,
        adapter=adapters.USER,
        defense=defense.name,
        trained_with_buffer=defense.uses_buffer,
        buffer_mode=stage.buffer_mode if defense.uses_buffer else None,
        contains_buffer=False,
    )
    return writer.finalize(manifest)
