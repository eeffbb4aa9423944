"""Train the ReinforceLoRA while jailbroken: BufferLoRA merged into the base and frozen, a new LoRA learns
harmful prompt -> refusal plus benign pairs on top of it (and, with `reinforce.lookalike_data`, harmless prompts
that sound unsafe answered normally, so it learns what not to refuse)."""

from __future__ import annotations

from pathlib import Path

from bnr import adapters
from bnr.config import Config
from bnr.models import load_model_and_tokenizer, serving_name
from bnr.recipes.common import (
    check_parent,
    check_trained,
    data_manifest,
    fit,
    load_lookalikes,
    load_refusal_mix,
    manifest_for,
    open_run,
)


def run(cfg: Config) -> Path:
    stage = cfg.reinforce
    check_parent(stage.buffer, "buffer", "reinforce.buffer", cfg.model, content=True)
    refusals, benign = load_refusal_mix(stage, cfg.seed, "reinforce")
    lookalikes = load_lookalikes(stage, cfg.seed, "reinforce")
    writer = open_run(cfg, stage.out, "reinforce")
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    model = adapters.attach_frozen(model, stage.buffer, adapters.BUFFER, "merged")
    model = adapters.add_adapter(model, adapters.REINFORCE, stage.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[adapters.REINFORCE], trainable=[adapters.REINFORCE])
    training = fit(model, tokenizer, refusals + benign + lookalikes, cfg, stage.train, writer, "reinforce")
    adapters.save_adapter(model, adapters.REINFORCE, writer.tmp)
    check_trained(writer.tmp, "bnr train-reinforce")
    data = {"refusal": data_manifest(refusals), "benign": data_manifest(benign)}
    if lookalikes:
        data["lookalike"] = data_manifest(lookalikes)
    manifest = manifest_for(
        cfg,
        parents=[("buffer", stage.buffer)],
        data=data,
        training=training,
        adapter=adapters.REINFORCE,
        trained_with_buffer=True,
        contains_buffer=False,
    )
    return writer.finalize(manifest)
