"""The only module that imports peft for model surgery: add / attach-frozen / activate / save adapters.

Adapter names are the constants below. `set_active` is the one function that changes which adapters
are active and trainable; it asserts that exactly the intended parameters require grad.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model

from bnr.config import LoraConfig
from bnr.diskfull import writing
from bnr.errors import BnrError
from bnr.lora_files import check_adapter_files

log = logging.getLogger(__name__)

BUFFER = "buffer"
REINFORCE = "reinforce"
USER = "user"
SAFETY = "safety"
ALIGN = "align"

AttachMode = Literal["merged", "separate"]


def peft_config(spec: LoraConfig, base_name: str | None = None) -> PeftLoraConfig:
    return PeftLoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        rank_pattern=dict(spec.rank_pattern),
        alpha_pattern=dict(spec.alpha_pattern),
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_name,
    )


def init_seed(name: str) -> int:
    """The seed of adapter `name`'s initialisation: derived from the run's seed (the last `torch.manual_seed`)
    and the name, so a run stays reproducible while its buffer, reinforce and user LoRAs do not all start from
    the same A (identical starts would make independently trained adapters look alike to the buffer guard)."""
    return (torch.initial_seed() * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def add_adapter(model: Any, name: str, spec: LoraConfig, base_name: str | None = None) -> PeftModel:
    """Add a fresh trainable LoRA named `name` (initialised from `init_seed(name)`); wraps a plain model
    in a PeftModel if needed."""
    cfg = peft_config(spec, base_name)
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed(name))
            # `builtin:toy` is recorded as the base name on purpose; peft warns that the model's path differs
            warnings.filterwarnings("ignore", message=".*base_model_name_or_path.* was renamed", category=UserWarning)
            if isinstance(model, PeftModel):
                model.add_adapter(name, cfg)
                return model
            return get_peft_model(model, cfg, adapter_name=name)
    except ValueError as e:
        raise BnrError(f"cannot add LoRA {name!r}: {str(e).splitlines()[0]}; check lora.target_modules") from None


def _load(model: Any, adapter_dir: str | Path, name: str) -> PeftModel:
    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise BnrError(f"{str(path)!r} holds no PEFT adapter (adapter_config.json missing); point to an adapter run")
    check_adapter_files(path)
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            return model
        return PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as e:
        raise BnrError(
            f"adapter {str(path)!r} does not fit this base model ({str(e).splitlines()[0][:160]}); "
            "it was trained on another base"
        ) from None


def attach_frozen(model: Any, adapter_dir: str | Path, name: str, mode: AttachMode) -> Any:
    """Attach a trained adapter frozen.

    `merged` folds it into the base weights (returns a plain model: zero overhead, as the paper's code);
    `separate` keeps it as a frozen active adapter with dropout 0 (returns a PeftModel).
    """
    if mode == "merged":
        _check_mergeable(model, name)
    peft_model = _load(model, adapter_dir, name)
    if mode == "merged":
        if len(peft_model.peft_config) != 1:
            raise BnrError("merged attach needs a model without other adapters; attach the frozen one first")
        merged = peft_model.merge_and_unload()
        for p in merged.parameters():
            p.requires_grad_(False)
        return merged
    _zero_dropout(peft_model, name)
    for n, p in peft_model.named_parameters():
        if f".{name}." in n:
            p.requires_grad_(False)
    return peft_model


def _check_mergeable(model: Any, name: str) -> None:
    """Refuse a merged attach that cannot be exact: into a quantised base, or into weights FSDP has sharded."""
    from bnr import distributed

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        raise BnrError(
            f"cannot merge the frozen {name!r} adapter into a quantised base (the merge would be rounded); "
            "use user.buffer_mode=separate, or model.quantize=none"
        )
    if distributed.is_sharded(model):  # under FSDP the loop shards after the recipe has merged: exact
        raise BnrError(
            f"cannot merge the frozen {name!r} adapter into weights that FSDP has already sharded; attach it "
            "before training, or use user.buffer_mode=separate"
        )


def _zero_dropout(model: Any, name: str) -> None:
    for module in model.modules():
        drop = getattr(module, "lora_dropout", None)
        if isinstance(drop, torch.nn.ModuleDict) and name in drop:
            drop[name] = torch.nn.Identity()


def set_active(model: PeftModel, active: list[str], trainable: list[str]) -> list[torch.nn.Parameter]:
    """Activate `active` adapters, make exactly the LoRA weights of `trainable` require grad; return them.

    Build the optimizer after this call.
    """
    unknown = set(active) - set(model.peft_config)
    if unknown or not set(trainable) <= set(active):
        raise ValueError(f"bad adapter selection active={active} trainable={trainable} have={list(model.peft_config)}")
    model.base_model.set_adapter(list(active))  # type: ignore[operator]
    for n, p in model.named_parameters():
        p.requires_grad_(any(f".{t}." in n for t in trainable) and "lora_" in n)
    for frozen in set(active) - set(trainable):
        _zero_dropout(model, frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    expected = [n for n, _ in model.named_parameters() if "lora_" in n and any(f".{t}." in n for t in trainable)]
    assert names == expected, "requires_grad does not match the intended trainable adapters"
    assert bool(params) == bool(trainable), "no trainable LoRA parameters found"
    return params


def save_adapter(model: PeftModel, name: str, out_dir: str | Path) -> None:
    """Save adapter `name` in standard PEFT format directly into `out_dir` (adapter_config.json + safetensors).

    A model sharded by FSDP: the adapter's whole weights are gathered first (call it on every rank)."""
    from bnr import distributed

    out = Path(out_dir)
    staging = out / f".save-{name}"
    kwargs: dict[str, Any] = {}
    if distributed.is_sharded(model):
        kwargs["state_dict"] = {
            k: distributed.full_tensor(v).cpu() for k, v in model.state_dict().items() if f".{name}." in k
        }
    with writing(out / "adapter_model.safetensors"):
        model.save_pretrained(str(staging), selected_adapters=[name], safe_serialization=True, **kwargs)
    src = staging / name if (staging / name).is_dir() else staging
    for f in src.iterdir():
        if f.is_file():
            shutil.move(str(f), out / f.name)
    shutil.rmtree(staging)
    _sort_target_modules(out / "adapter_config.json")


def _sort_target_modules(config: Path) -> None:
    """peft writes `target_modules` in set order, which changes with each process's string hashing; sorted, the
    same adapter gives the same file (and content hash, hence stage keys) in every process."""
    data = json.loads(config.read_text())
    if isinstance(data.get("target_modules"), list):
        data["target_modules"] = sorted(data["target_modules"])
        config.write_text(json.dumps(data, indent=2, sort_keys=True))


def lora_layers(model: PeftModel, name: str) -> dict[str, tuple[torch.nn.Linear, torch.nn.Linear]]:
    """Module name (relative to the causal LM, as in `bnr.lora_files`) -> (lora_A, lora_B) Linear layers of
    adapter `name` (for defenses that hook or score the factor layers themselves, e.g. Antidote)."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    out: dict[str, tuple[torch.nn.Linear, torch.nn.Linear]] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, LoraLayer) and name in module.lora_A:
            key = mod_name[len(prefix) :] if mod_name.startswith(prefix) else mod_name
            a, b = module.lora_A[name], module.lora_B[name]
            assert isinstance(a, torch.nn.Linear) and isinstance(b, torch.nn.Linear)
            out[key] = (a, b)
    return out


@contextmanager
def disabled(model: PeftModel) -> Iterator[None]:
    """Run the base model with every adapter switched off (LDIFS' initial features, Security Vectors' KL
    teacher): no second model copy. Frozen adapters merged into the weights stay part of the base."""
    with model.disable_adapter():
        yield
