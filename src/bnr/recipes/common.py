"""Steps every training recipe shares: sample data, open the run dir, train, save, write the manifest."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from bnr.artifacts import RunWriter, read_manifest
from bnr.config import Config, DataConfig, ModelConfig, RefusalMixStage, TrainConfig, to_dict, to_yaml
from bnr.data.mix import data_manifest, sample
from bnr.data.records import Record
from bnr.data.sources import load_records
from bnr.data.tokenize import encode_records
from bnr.errors import BnrError
from bnr.models import model_identity
from bnr.trackers import Trackers

log = logging.getLogger(__name__)


def load_sampled(data: DataConfig, n: int | None, seed: int, what: str) -> list[Record]:
    """All records of `data`, or `n` of them drawn with `seed` (error if n exceeds the data)."""
    records = load_records(data)
    if n is None:
        return records
    if n < 1:
        raise BnrError(f"{what}: n must be >= 1 (got {n})")
    return sample(records, n, random.Random(seed), what)


def load_refusal_mix(stage: RefusalMixStage, seed: int, what: str) -> tuple[list[Record], list[Record]]:
    """(refusal records, benign records) of a refusal-mix stage, each sampled to its n."""
    refusals = load_sampled(stage.refusal_data, stage.n_refusal, seed, f"{what} refusal")
    benign = load_sampled(stage.benign_data, stage.n_benign, seed + 1, f"{what} benign")
    return refusals, benign


def open_run(cfg: Config, out: str, stage: str) -> RunWriter:
    writer = RunWriter(out, stage, overwrite=cfg.overwrite, resume=cfg.resume)
    writer.write_config(to_yaml(cfg))
    return writer


def check_same_base(parent: str | Path, model: ModelConfig) -> dict[str, Any]:
    """The parent run's manifest, after checking it was trained on the same base model."""
    manifest = read_manifest(parent)
    theirs = manifest.get("base_model", {}).get("name_or_path")
    if theirs and Path(theirs).resolve() != Path(model.name_or_path).resolve() and theirs != model.name_or_path:
        raise BnrError(
            f"run {str(parent)!r} was trained on base {theirs!r}, not {model.name_or_path!r}; "
            "use adapters trained on the same base"
        )
    return manifest


def fit(
    model: Any,
    tokenizer: Any,
    records: list[Record],
    cfg: Config,
    train_cfg: TrainConfig,
    writer: RunWriter,
    desc: str,
) -> dict[str, Any]:
    """Tokenize, run the training loop with checkpoints in the run's partial folder; return a summary."""
    from bnr.train import seed_everything, train

    examples = encode_records(tokenizer, records, cfg.template, cfg.max_length)
    seed_everything(cfg.seed)
    trackers = Trackers(cfg.trackers, writer.tmp, desc, to_dict(cfg)) if cfg.trackers else None
    result = train(
        model,
        examples,
        train_cfg,
        seed=cfg.seed,
        pad_id=tokenizer.pad_token_id,
        checkpoint_dir=writer.checkpoint_dir,
        on_log=trackers.wrap(writer.log_metrics) if trackers else writer.log_metrics,
        desc=desc,
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


def manifest_for(
    cfg: Config,
    *,
    parents: list[tuple[str, str]],
    data: dict[str, Any],
    training: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Provenance shared by every stage: parents, base model, seed, config hash, data manifest."""
    from bnr.artifacts import hash_json

    return {
        "parents": [{"stage": s, "path": str(Path(p).resolve())} for s, p in parents],
        "base_model": model_identity(cfg.model),
        "seed": cfg.seed,
        "template": cfg.template,
        "max_length": cfg.max_length,
        "config_hash": hash_json(to_dict(cfg)),
        "data": data,
        "training": training or {},
        **extra,
    }


__all__ = ["check_same_base", "data_manifest", "fit", "load_refusal_mix", "load_sampled", "manifest_for", "open_run"]
