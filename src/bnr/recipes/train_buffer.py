"""Train the BufferLoRA: plain SFT on the provider's harmful set (the temporary jailbreak).

The run is marked `contains_buffer`, and its tensors go into the provider's buffer registry (`bnr.guard`), so
that merge and every export refuse it and any copy of it, whatever the files around them say.
"""

from __future__ import annotations

from pathlib import Path

from bnr import adapters, guard
from bnr.config import Config
from bnr.models import load_model_and_tokenizer, serving_name
from bnr.recipes.common import data_manifest, fit, load_sampled, manifest_for, open_run


def run(cfg: Config) -> Path:
    stage = cfg.buffer
    records = load_sampled(stage.data, stage.n, cfg.seed, "buffer harmful")
    writer = open_run(cfg, stage.out, "buffer")
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    model = adapters.add_adapter(model, adapters.BUFFER, stage.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[adapters.BUFFER], trainable=[adapters.BUFFER])
    training = fit(model, tokenizer, records, cfg, stage.train, writer, "buffer")
    adapters.save_adapter(model, adapters.BUFFER, writer.tmp)
    guard.register(writer.tmp, source=writer.out)
    manifest = manifest_for(
        cfg,
        parents=[],
        data=data_manifest(records, role="provider harmful"),
        training=training,
        adapter=adapters.BUFFER,
        contains_buffer=True,
    )
    return writer.finalize(manifest)
