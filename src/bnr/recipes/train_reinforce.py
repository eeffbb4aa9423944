"""Train the ReinforceLoRA while jailbroken: BufferLoRA merged into the base and frozen, a new LoRA learns
harmful prompt -> refusal plus benign pairs on top of it (and, with `reinforce.lookalike_data`, harmless prompts
that sound unsafe answered normally, so it learns what not to refuse). With `reinforce.with_buffer: false` the
same LoRA is trained on the plain aligned base instead (an ablation). The manifest records the LoRA's delta norm
(`delta_norm`: sqrt of the sum over modules of ||s B A||_F^2), so ablations can compare its strength."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from bnr import adapters
from bnr.config import Config
from bnr.models import load_model_and_tokenizer, serving_name
from bnr.recipes.common import (
    check_parent,
    data_manifest,
    fit,
    load_lookalikes,
    load_refusal_mix,
    manifest_for,
    open_run,
)


def run(cfg: Config) -> Path:
    stage = cfg.reinforce
    if stage.max_length is not None:  # the stage's own length, recorded as this run's max_length
        cfg = dataclasses.replace(cfg, max_length=stage.max_length)
    if stage.with_buffer:
        check_parent(stage.buffer, "buffer", "reinforce.buffer", cfg.model, content=True)
    refusals, benign = load_refusal_mix(stage, cfg.seed, "reinforce")
    lookalikes = load_lookalikes(stage, cfg.seed, "reinforce")
    writer = open_run(cfg, stage.out, "reinforce")
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    if stage.with_buffer:
        model = adapters.attach_frozen(model, stage.buffer, adapters.BUFFER, "merged")
    model = adapters.add_adapter(model, adapters.REINFORCE, stage.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[adapters.REINFORCE], trainable=[adapters.REINFORCE])
    training = fit(model, tokenizer, refusals + benign + lookalikes, cfg, stage.train, writer, "reinforce")
    adapters.save_adapter(model, adapters.REINFORCE, writer.tmp)
    data = {"refusal": data_manifest(refusals), "benign": data_manifest(benign)}
    if lookalikes:
        data["lookalike"] = data_manifest(lookalikes)
    manifest = manifest_for(
        cfg,
        parents=[("buffer", stage.buffer)] if stage.with_buffer else [],
        data=data,
        training=training,
        adapter=adapters.REINFORCE,
        trained_with_buffer=stage.with_buffer,
        contains_buffer=False,
        delta_norm=delta_norm(writer.tmp),
    )
    return writer.finalize(manifest)


def delta_norm(adapter_dir: Path) -> float:
    """sqrt(sum over modules of ||scaling * B A||_F^2): the size of the whole update a LoRA folder applies."""
    from bnr.lora_files import read_lora
    from bnr.merge import factor_norm

    lora = read_lora(adapter_dir)
    return math.sqrt(sum((m.scaling * factor_norm(m.B, m.A)) ** 2 for m in lora.modules.values()))
