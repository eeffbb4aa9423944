"""Merge ReinforceLoRA into UserLoRA (QR soft projection, in factor space) and write a servable adapter.

Inputs may be bnr run directories or plain PEFT adapter folders. Outputs: a PEFT adapter of rank
r_U + r_R at the run root, `merge_diagnostics.json`, and on request a full merged model in `full_model/`,
built from the plain base (the buffer is never part of it).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json, is_complete, read_manifest
from bnr.config import Config
from bnr.errors import BnrError
from bnr.merge import DIAGNOSTICS, diagnostics_json, merge_adapters, write_full_model, write_merged_adapter
from bnr.models import serving_name
from bnr.recipes.common import manifest_for, open_run

log = logging.getLogger(__name__)
FULL_MODEL_DIR = "full_model"


def _parent(path: str, role: str) -> dict[str, Any]:
    """The input's manifest if it is a bnr run ({} for a plain PEFT folder)."""
    if not Path(path).exists():
        raise BnrError(f"missing {role} adapter {path!r}; train it first or fix merge.{role}=")
    return read_manifest(path) if is_complete(path) else {}


def run(cfg: Config) -> Path:
    m = cfg.merge
    user_manifest = _parent(m.user, "user")
    _parent(m.reinforce, "reinforce")
    parents = [("user", m.user), ("reinforce", m.reinforce)]
    # the merged adapter is prompted like the UserLoRA it came from
    cfg = dataclasses.replace(cfg, template=user_manifest.get("template", cfg.template))
    result = merge_adapters(
        m.user,
        m.reinforce,
        method=m.method,
        alpha=m.alpha,
        tau=m.tau,
        scale=m.scale,
        allow_base_mismatch=m.allow_base_mismatch,
    )
    base = cfg.model.name_or_path or result.base_model_name_or_path
    if m.full_model and not base:
        raise BnrError("full_model=true needs the base model: set model.name_or_path")
    writer = open_run(cfg, m.out, "merge")
    write_merged_adapter(
        result, writer.tmp, serving_name(dataclasses.replace(cfg.model, name_or_path=base)) if base else None
    )
    diagnostics = diagnostics_json(result)
    atomic_write_json(writer.tmp / DIAGNOSTICS, diagnostics)
    if m.full_model and base:
        _write_full(cfg, base, result, writer.tmp / FULL_MODEL_DIR)
    summary = {k: v for k, v in diagnostics["summary"].items() if k != "inputs"}
    manifest = manifest_for(
        dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=base or "")),
        parents=parents,
        data={},
        merge=summary,
        inputs=diagnostics["summary"]["inputs"],
        full_model=m.full_model,
        contains_buffer=False,
    )
    return writer.finalize(manifest)


def _write_full(cfg: Config, base: str, result: object, out: Path) -> None:
    import torch

    from bnr.cards import chat_template_for
    from bnr.models import checkpoint_dtype, load_model_and_tokenizer

    model_cfg = dataclasses.replace(cfg.model, name_or_path=base)
    model, tokenizer = load_model_and_tokenizer(model_cfg)
    with torch.no_grad():
        # merged in float64, saved in the base checkpoint's own dtype (a bf16 base stays bf16, not float32)
        write_full_model(model, result, out, inplace=True, save_dtype=checkpoint_dtype(model_cfg))  # type: ignore[arg-type]
    jinja = chat_template_for(cfg.template)
    if jinja:  # a serving stack's chat API then renders the prompt format the adapter was trained with
        tokenizer.chat_template = jinja
    tokenizer.save_pretrained(str(out))
