"""bnr's own provider stages, registered in the provider registry (`bnr.runs.providers`): the BufferLoRA and
the ReinforceLoRA, with the code that trains each (`bnr train-buffer` / `bnr train-reinforce` call it too)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from bnr import adapters
from bnr.config import Config
from bnr.defenses.base import BUFFER, REINFORCE
from bnr.runs.providers import PROVIDERS, Provider, closure, register_provider

__all__ = [
    "PROVIDERS",
    "Provider",
    "closure",
    "delta_norm",
    "register_provider",
    "train_buffer",
    "train_reinforce",
]


def train_buffer(cfg: Config) -> Path:
    """The BufferLoRA: plain SFT on the provider's harmful set (the temporary jailbreak), at `buffer.out`.

    The run is marked `contains_buffer`, and its tensors go into the provider's buffer registry (`bnr.guard`), so
    that merge and every export refuse it and any copy of it, whatever the files around them say."""
    from bnr.runs.fit import train_sft_lora

    return train_sft_lora(
        cfg, cfg.buffer, cfg.buffer.out, "buffer", adapters.BUFFER, "buffer harmful", "provider harmful"
    )


def train_reinforce(cfg: Config) -> Path:
    """The ReinforceLoRA, trained while jailbroken, at `reinforce.out`: the BufferLoRA merged into the base and
    frozen, a new LoRA learns harmful prompt -> refusal plus benign pairs on top of it (and, with
    `reinforce.lookalike_data`, harmless prompts that sound unsafe answered normally). With
    `reinforce.with_buffer: false` the same LoRA is trained on the plain aligned base instead (an ablation). The
    manifest records the LoRA's `delta_norm` (sqrt of the sum over modules of ||s B A||_F^2).

    With `defenses.bnr.reinforce_pool` (issue 27's remedy c, `bnr.defenses.bnr`), the stage first trains the
    provider's pool of buffer-trained UserLoRAs and trains the LoRA on the plain base with them folded in, one per
    step in turn, instead of on the buffer; the manifest's `reinforce_pool` lists them."""
    from bnr.data.mix import data_manifest
    from bnr.defenses.bnr import pool_hooks, pool_manifest, train_pool
    from bnr.models import load_model_and_tokenizer, serving_name
    from bnr.runs.fit import check_trained, fit, load_lookalikes, load_refusal_mix
    from bnr.runs.opening import check_parent, manifest_for, open_run

    stage = cfg.reinforce
    pool = train_pool(cfg)
    with_buffer = stage.with_buffer and not pool
    if stage.max_length is not None:  # the stage's own length, recorded as this run's max_length
        cfg = dataclasses.replace(cfg, max_length=stage.max_length)
    if with_buffer:
        check_parent(stage.buffer, "buffer", "reinforce.buffer", cfg.model, content=True)
    refusals, benign = load_refusal_mix(stage, cfg.seed, "reinforce")
    lookalikes = load_lookalikes(stage, cfg.seed, "reinforce")
    writer = open_run(cfg, stage.out, "reinforce")
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    if with_buffer:
        model = adapters.attach_frozen(model, stage.buffer, adapters.BUFFER, "merged")
    model = adapters.add_adapter(model, adapters.REINFORCE, stage.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[adapters.REINFORCE], trainable=[adapters.REINFORCE])
    hooks_for = (lambda _: pool_hooks(cfg, pool)) if pool else None
    training = fit(
        model, tokenizer, refusals + benign + lookalikes, cfg, stage.train, writer, "reinforce", hooks_for=hooks_for
    )
    adapters.save_adapter(model, adapters.REINFORCE, writer.tmp)
    check_trained(writer.tmp, "bnr train-reinforce")
    data = {"refusal": data_manifest(refusals), "benign": data_manifest(benign)}
    if lookalikes:
        data["lookalike"] = data_manifest(lookalikes)
    manifest = manifest_for(
        cfg,
        parents=[("buffer", stage.buffer)] if with_buffer else [],
        data=data,
        training=training,
        adapter=adapters.REINFORCE,
        trained_with_buffer=with_buffer,
        contains_buffer=False,
        delta_norm=delta_norm(writer.tmp),
        **({"reinforce_pool": pool_manifest(cfg, pool)} if pool else {}),
    )
    return writer.finalize(manifest)


def delta_norm(adapter_dir: Path) -> float:
    """sqrt(sum over modules of ||scaling * B A||_F^2): the size of the whole update a LoRA folder applies."""
    from bnr.lora_files import read_lora
    from bnr.merge import factor_norm

    lora = read_lora(adapter_dir)
    return math.sqrt(sum((m.scaling * factor_norm(m.B, m.A)) ** 2 for m in lora.modules.values()))


def _reinforce_extra(cfg: Config) -> object:
    """More of the ReinforceLoRA's key: its pool (`defenses.bnr.reinforce_pool`), None without one."""
    from bnr.defenses.bnr import pool_key

    return pool_key(cfg)


def _place_buffer(cfg: Config, path: str) -> Config:
    return dataclasses.replace(
        cfg,
        buffer=dataclasses.replace(cfg.buffer, out=path),
        reinforce=dataclasses.replace(cfg.reinforce, buffer=path),
        user=dataclasses.replace(cfg.user, buffer=path),
    )


def _place_reinforce(cfg: Config, path: str) -> Config:
    return dataclasses.replace(
        cfg,
        reinforce=dataclasses.replace(cfg.reinforce, out=path),
        merge=dataclasses.replace(cfg.merge, reinforce=path),
    )


register_provider(
    Provider(
        BUFFER,
        "BufferLoRA: SFT on the provider's harmful set (`buffer` section)",
        "user.buffer",
        ("buffer",),
        (),
        lambda cfg: cfg.user.buffer,
        _place_buffer,
        train_buffer,
    )
)
register_provider(
    Provider(
        REINFORCE,
        "ReinforceLoRA: refusals + benign on top of the merged buffer (`reinforce` section)",
        "merge.reinforce",
        ("reinforce",),
        (BUFFER,),
        lambda cfg: cfg.merge.reinforce,
        _place_reinforce,
        train_reinforce,
        _reinforce_extra,
        parent_paths=lambda cfg: {BUFFER: cfg.reinforce.buffer},
    )
)
