"""Safety-align a base model that does not refuse harmful requests on its own (the setting the method
assumes): train a LoRA on harmful prompt -> refusal plus benign pairs, merge it into the weights and save
a full model folder (or, with `align.full`, fine-tune every weight). Later stages point `model.name_or_path`
at this run directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bnr import adapters
from bnr.config import Config
from bnr.data.mix import data_manifest
from bnr.diskfull import writing
from bnr.errors import BnrError
from bnr.models import load_model_and_tokenizer, serving_name
from bnr.runs.fit import fit, load_lookalikes, load_refusal_mix
from bnr.runs.keys import StageKey, stage_key
from bnr.runs.opening import manifest_for, open_run


def align_key(cfg: Config) -> StageKey:
    """The align stage's key: its section and the run-wide knobs (no parents)."""
    return stage_key(cfg, ("align",), {})


def run(cfg: Config) -> Path:
    key = align_key(cfg)
    if cfg.align.max_length is not None:  # the alignment's own length, recorded as this run's max_length
        cfg = dataclasses.replace(cfg, max_length=cfg.align.max_length)
    stage = cfg.align
    if stage.full and cfg.model.quantize != "none":
        raise BnrError("align.full trains every weight, which a quantised base cannot; use model.quantize=none")
    refusals, benign = load_refusal_mix(stage, cfg.seed, "align")
    lookalikes = load_lookalikes(stage, cfg.seed, "align")
    writer = open_run(cfg, stage.out, "align", key=key)
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    if not stage.full:
        model = adapters.add_adapter(model, adapters.ALIGN, stage.lora, base_name=serving_name(cfg.model))
        adapters.set_active(model, active=[adapters.ALIGN], trainable=[adapters.ALIGN])
    training = fit(model, tokenizer, refusals + benign + lookalikes, cfg, stage.train, writer, "align")
    aligned = model if stage.full else model.merge_and_unload()
    with writing(writer.tmp / "model.safetensors"):
        aligned.save_pretrained(str(writer.tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(writer.tmp))
    data = {"refusal": data_manifest(refusals), "benign": data_manifest(benign)}
    if lookalikes:
        data["lookalike"] = data_manifest(lookalikes)
    manifest = manifest_for(cfg, parents=[], data=data, training=training, full_model=True, contains_buffer=False)
    return writer.finalize(manifest)
