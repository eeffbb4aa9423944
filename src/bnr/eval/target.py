"""What `bnr eval` evaluates: a bnr run directory, a plain PEFT adapter folder, or a model (folder or hub id).

The target is resolved to (base model, adapter folder or None) and identified by hashes - the base model's
identity and the adapter's files - which key the response cache and go into every aggregate JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnr.artifacts import ADAPTER_CONFIG, FULL_MODEL_DIR, MANIFEST, hash_files, hash_json, is_complete
from bnr.config import ModelConfig
from bnr.errors import BnrError

log = logging.getLogger(__name__)
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class Target:
    """A resolved evaluation target."""

    kind: str  # "run" | "adapter" | "model"
    path: str
    base: ModelConfig
    adapter: str | None
    stage: str | None = None

    def identity(self) -> dict[str, Any]:
        from bnr.models import model_identity

        ident: dict[str, Any] = {
            "kind": self.kind,
            "path": self.path,
            "stage": self.stage,
            "base_model": model_identity(self.base),
        }
        if self.adapter:
            files = [Path(self.adapter) / ADAPTER_CONFIG] + [
                Path(self.adapter) / f for f in ADAPTER_WEIGHTS if (Path(self.adapter) / f).is_file()
            ]
            ident["adapter_hash"] = hash_files(files)
        return ident

    def key(self) -> str:
        """Model + adapter hash: what the response cache is keyed on."""
        ident = self.identity()
        return hash_json({"base": ident["base_model"], "adapter": ident.get("adapter_hash")})


def _adapter_base(folder: Path) -> str | None:
    try:
        cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        raise BnrError(f"{str(folder)!r}: unreadable {ADAPTER_CONFIG}") from None
    if not isinstance(cfg, dict):
        raise BnrError(
            f"{str(folder / ADAPTER_CONFIG)!r} is a JSON {type(cfg).__name__}, not an object; "
            "a PEFT adapter_config.json is a mapping (r, lora_alpha, target_modules, ...)"
        )
    base = cfg.get("base_model_name_or_path")
    return str(base) if base else None


def _with_base(model: ModelConfig, base: str | None, where: str) -> ModelConfig:
    if model.name_or_path:
        from bnr.models import serving_name

        if base and base not in (model.name_or_path, serving_name(model)):  # builtin:toy == its resolved folder
            log.warning("%s was made on base %r; evaluating on model.name_or_path=%r", where, base, model.name_or_path)
        return model
    if not base:
        raise BnrError(f"{where} does not name its base model; set model.name_or_path")
    return dataclasses.replace(model, name_or_path=base)


def resolve_target(target: str, model: ModelConfig) -> Target:
    """Classify `target` and find its base model (`model.name_or_path` wins when set)."""
    if not target:
        if not model.name_or_path:
            raise BnrError("nothing to evaluate: give target=<run dir | adapter folder | model> or model.name_or_path")
        return Target("model", model.name_or_path, model, None)
    p = Path(target)
    if p.is_dir() and (p / MANIFEST).is_file():
        if not is_complete(p):
            raise BnrError(f"{target!r} is not a complete bnr run; finish (or resume) the stage that writes it")
        manifest = json.loads((p / MANIFEST).read_text())
        base = manifest.get("base_model", {}).get("name_or_path")
        if (p / FULL_MODEL_DIR / "config.json").is_file():
            return Target(
                "run",
                target,
                dataclasses.replace(model, name_or_path=str(p / FULL_MODEL_DIR)),
                None,
                manifest.get("stage"),
            )
        if (p / "config.json").is_file():  # a full model at the run root (`bnr align`)
            return Target("run", target, dataclasses.replace(model, name_or_path=target), None, manifest.get("stage"))
        if (p / ADAPTER_CONFIG).is_file():
            base = base or _adapter_base(p)
            return Target("run", target, _with_base(model, base, f"run {target!r}"), target, manifest.get("stage"))
        raise BnrError(f"run {target!r} ({manifest.get('stage')}) holds no adapter or model to evaluate")
    if p.is_dir() and (p / ADAPTER_CONFIG).is_file():
        return Target("adapter", target, _with_base(model, _adapter_base(p), f"adapter {target!r}"), target)
    if p.exists() and not (p / "config.json").is_file():
        raise BnrError(f"{target!r} is neither a bnr run, a PEFT adapter folder nor a model folder")
    return Target("model", target, dataclasses.replace(model, name_or_path=target), None)


def load_target(target: Target) -> tuple[Any, Any]:
    """(model, tokenizer) ready for `transformers` generation (the `hf` backend, `bnr.eval.backends`); an adapter
    is merged into the base weights (fast decoding), or kept as a separate frozen adapter on a quantised base
    (merging into 4-bit weights would round it)."""
    from bnr import adapters
    from bnr.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(target.base)
    if target.adapter:
        quantised = getattr(model, "is_loaded_in_4bit", False)
        model = adapters.attach_frozen(model, target.adapter, adapters.USER, "separate" if quantised else "merged")
    model.eval()
    return model, tokenizer
