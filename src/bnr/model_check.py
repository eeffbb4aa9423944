"""What `bnr validate` checks about the base model without loading its weights: the folder exists, its config reads,
every LoRA target module names Linear layers of this architecture (built on the meta device), and `max_length`
leaves room for the answers of the user's data."""

from __future__ import annotations

from typing import Any

from bnr.config import Config, ModelConfig
from bnr.data.records import Record
from bnr.errors import BnrError

LORA_STAGES = ("align", "buffer", "reinforce", "user")


def linear_names(cfg: ModelConfig) -> set[str] | None:
    """Full names of the model's Linear layers (from its config, on the meta device: no weights); None when the
    config is not available offline (a hub id not in the local cache)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bnr.models import _check_source, _source_kwargs, resolve

    model_cfg = resolve(cfg)
    _check_source(model_cfg)
    try:
        hf_cfg = AutoConfig.from_pretrained(model_cfg.name_or_path, local_files_only=True, **_source_kwargs(model_cfg))
    except (OSError, ValueError):
        return None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_cfg, trust_remote_code=model_cfg.trust_remote_code)
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def check_targets(cfg: Config, names: set[str]) -> None:
    """Every `<stage>.lora.target_modules` entry matches a Linear layer (as peft matches: the name or a suffix)."""
    kinds = sorted({n.rsplit(".", 1)[-1] for n in names})
    for stage in LORA_STAGES:
        for target in getattr(cfg, stage).lora.target_modules:
            if not any(n == target or n.endswith("." + target) for n in names):
                raise BnrError(
                    f"{stage}.lora.target_modules: {target!r} names no Linear layer of this model; "
                    f"its Linear layers are: {', '.join(kinds)}"
                )


def check_max_length(cfg: Config, tokenizer: Any, records: list[Record]) -> str:
    """One line on how the user's records fit `max_length`; an error when no record keeps an answer token."""
    from bnr.data.tokenize import encode_example

    kept = [encode_example(tokenizer, r, cfg.template, cfg.max_length) for r in records]
    dropped = sum(e is None for e in kept)
    if dropped == len(records):
        raise BnrError(
            f"max_length={cfg.max_length} leaves no answer token for any of {len(records)} user records (their "
            "prompts fill it); raise max_length"
        )
    truncated = sum(e is not None and len(e.input_ids) == cfg.max_length for e in kept)
    return f"max_length {cfg.max_length}: {dropped} of {len(records)} user records dropped, {truncated} truncated"


def check_model(cfg: Config, user_records: list[Record]) -> list[str]:
    """The model checks of `bnr validate`; returns the lines to print."""
    from bnr.models import load_tokenizer

    names = linear_names(cfg.model)
    if names is None:
        return [f"model {cfg.model.name_or_path!r}: not in the local cache; its modules and tokenizer are not checked"]
    check_targets(cfg, names)
    tokenizer = load_tokenizer(cfg.model)
    return [
        f"model: {len(names)} Linear layers; every lora.target_modules entry found",
        check_max_length(cfg, tokenizer, user_records),
    ]
