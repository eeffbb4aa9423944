"""The shared fit helper: sample a stage's data, run the one training loop with checkpoints in the run's partial
folder, and (`train_sft_lora`) the whole plain-SFT LoRA stage that the buffer and the safety adapter share."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from bnr.config import Config, DataConfig, RefusalMixStage, SftStage, TrainConfig, to_dict
from bnr.data.mix import data_manifest, sample
from bnr.data.phrasing import conversational
from bnr.data.records import Record
from bnr.data.sources import load_records
from bnr.data.tokenize import encode_records
from bnr.errors import BnrError
from bnr.runs.opening import STAGE_COMMANDS, manifest_for, open_run
from bnr.runs.writer import RunWriter
from bnr.trackers import Trackers

log = logging.getLogger(__name__)

# a listener for every training log record of the fits run inside `training_events` (the API's `on_event`)
_LISTENER: ContextVar[Callable[[dict[str, Any]], None] | None] = ContextVar("bnr_fit_listener", default=None)


@contextmanager
def training_events(listener: Callable[[dict[str, Any]], None] | None) -> Iterator[None]:
    """Inside the block, `fit` also passes each training log record to `listener` as `{"event": "train", ...}`."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def _log_sink(writer: RunWriter) -> Callable[[dict[str, Any]], None]:
    listener = _LISTENER.get()
    if listener is None:
        return writer.log_metrics

    def sink(record: dict[str, Any]) -> None:
        writer.log_metrics(record)
        listener({"event": "train", **record})

    return sink


def load_sampled(
    data: DataConfig, n: int | None, seed: int, what: str, *, require_output: bool = True
) -> list[Record]:
    """All records of `data`, or `n` of them drawn with `seed` (error if n exceeds the data). Prompt sets
    (evaluation-style files without answers) pass `require_output=False`."""
    records = load_records(data, require_output=require_output)
    if n is None:
        return records
    if n < 1:
        raise BnrError(f"{what}: n must be >= 1 (got {n})")
    return sample(records, n, random.Random(seed), what)


def load_refusal_mix(stage: RefusalMixStage, seed: int, what: str) -> tuple[list[Record], list[Record]]:
    """(refusal records, benign records) of a refusal-mix stage, each sampled to its n."""
    refusals = load_sampled(stage.refusal_data, stage.n_refusal, seed, f"{what} refusal")
    benign = load_sampled(stage.benign_data, stage.n_benign, seed + 1, f"{what} benign")
    if stage.conversational:
        return conversational(refusals), conversational(benign)
    return refusals, benign


def load_lookalikes(stage: RefusalMixStage, seed: int, what: str) -> list[Record]:
    """The stage's look-alike records (harmless prompts that sound unsafe, answered normally), or none."""
    if stage.lookalike_data is None:
        return []
    records = load_sampled(stage.lookalike_data, stage.n_lookalike, seed + 2, f"{what} look-alike")
    return conversational(records) if stage.conversational else records


def fit(
    model: Any,
    tokenizer: Any,
    records: list[Record],
    cfg: Config,
    train_cfg: TrainConfig,
    writer: RunWriter,
    desc: str,
    hooks_for: Callable[[list[Any]], Any] | None = None,
) -> dict[str, Any]:
    """Tokenize, run the training loop with checkpoints in the run's partial folder; return a summary.

    `hooks_for(examples)` gives the loop's `TrainHooks` (a defense's training hooks) for the tokenized records."""
    from bnr.seeding import seed_everything
    from bnr.train import train

    examples = encode_records(tokenizer, records, cfg.template, cfg.max_length)
    seed_everything(cfg.seed)
    hooks = hooks_for(examples) if hooks_for else None
    trackers = Trackers(cfg.trackers, writer.tmp, desc, to_dict(cfg)) if cfg.trackers and writer.main else None
    result = train(
        model,
        examples,
        train_cfg,
        seed=cfg.seed,
        pad_id=tokenizer.pad_token_id,
        checkpoint_dir=writer.checkpoint_dir,
        on_log=trackers.wrap(_log_sink(writer)) if trackers else _log_sink(writer),
        desc=desc,
        hooks=hooks,
    )
    if trackers:
        trackers.close()
    return {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "resumed_from": result.resumed_from,
        "examples": len(examples),
        "train_wall_time_s": round(result.wall_time_s, 3),
    }


def check_trained(folder: str | Path, what: str) -> None:
    """Refuse a LoRA that training left all zero (no step moved it: lr 0, no data), before it is written as a run."""
    from bnr.guard import is_untrained
    from bnr.lora_files import read_lora

    if is_untrained(read_lora(folder, allow_buffer=True).modules):
        raise BnrError(
            f"{what}: the trained LoRA is all zeros (training did not change it: check the learning rate, the "
            "number of steps and the data); nothing is written"
        )


def train_sft_lora(
    cfg: Config, stage: SftStage, out: str, name: str, adapter: str, what: str, role: str, key: str | None = None
) -> Path:
    """One LoRA `adapter` trained by plain SFT on `stage.data` (n of it, `what` in messages, `role` in the
    manifest) into run `out` of stage `name`, with stage key `key` (a provider's is set by `Provider.run`).

    The BufferLoRA (adapter `buffer`) also goes into the provider's buffer registry, and its run is marked
    `contains_buffer`, so merge and every export refuse it and any copy of it."""
    from bnr import adapters, guard
    from bnr.models import load_model_and_tokenizer, serving_name

    records = load_sampled(stage.data, stage.n, cfg.seed, what)
    writer = open_run(cfg, out, name, key=key)
    model, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
    model = adapters.add_adapter(model, adapter, stage.lora, base_name=serving_name(cfg.model))
    adapters.set_active(model, active=[adapter], trainable=[adapter])
    training = fit(model, tokenizer, records, cfg, stage.train, writer, name)
    adapters.save_adapter(model, adapter, writer.tmp)
    check_trained(writer.tmp, f"bnr {STAGE_COMMANDS.get(name, name)}")
    is_buffer = adapter == adapters.BUFFER
    if is_buffer:
        guard.register(writer.tmp, source=writer.out)
    data = data_manifest(records, role=role)
    manifest = manifest_for(cfg, parents=[], data=data, training=training, adapter=adapter, contains_buffer=is_buffer)
    return writer.finalize(manifest)
