"""Train the paper's safety LoRA: harmful prompt -> refusal on the plain aligned model (no buffer).

Its v = vec(B A) is the safety direction of the gradient analysis (`bnr analyze grads`). Where the aligned
model already refuses almost perfectly this adapter barely moves and its direction is mostly noise;
ReinforceLoRA is then the informative direction (docs/analysis.md).
"""

from __future__ import annotations

from pathlib import Path

from bnr import adapters
from bnr.config import Config
from bnr.models import load_model_and_tokenizer, serving_name
from bnr.recipes.common import data_manifest, fit, load_sampled, manifest_for, open_run

STAGE = "safety"


def run(cfg: Config) -> Path:
    stage = cfg.analyze.safety
    records = load_sampled(stage.data, stage.n, cfg.seed, "safety refusal")
    writer = open_run(cfg, stage.out, STAGE)
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    model = adapters.add_adapter(model, adapters.SAFETY, stage.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[adapters.SAFETY], trainable=[adapters.SAFETY])
    training = fit(model, tokenizer, records, cfg, stage.train, writer, STAGE)
    adapters.save_adapter(model, adapters.SAFETY, writer.tmp)
    manifest = manifest_for(
        cfg,
        parents=[],
        data=data_manifest(records, role="safety refusal"),
        training=training,
        adapter=adapters.SAFETY,
        contains_buffer=False,
    )
    return writer.finalize(manifest)
