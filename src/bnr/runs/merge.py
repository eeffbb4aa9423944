"""Merge ReinforceLoRA into UserLoRA (QR soft projection, in factor space) and write a servable adapter.

Inputs may be bnr run directories or plain PEFT adapter folders. Outputs: a PEFT adapter of rank
r_U + r_R at the run root, `merge_diagnostics.json`, and on request a full merged model in `full_model/`,
built from the plain base (the buffer is never part of it).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnr import guard
from bnr.artifacts import FULL_MODEL_DIR, MANIFEST, atomic_write_json, is_complete
from bnr.config import Config, GuardConfig
from bnr.diskfull import writing
from bnr.errors import BnrError
from bnr.lora_files import LoraModule, read_lora
from bnr.merge import (
    DIAGNOSTICS,
    diagnostics_json,
    factor_norm,
    knobs_of,
    merge_adapters,
    write_full_model,
    write_merged_adapter,
)
from bnr.models import serving_name
from bnr.runs import backstop
from bnr.runs.keys import stage_key
from bnr.runs.opening import check_parent, check_same_base, manifest_for, open_run

log = logging.getLogger(__name__)


# a LoRA delta with a Frobenius norm above this is broken (trained ones are O(1)-O(100)), not a safe model
MAX_DELTA_NORM = 1e6


def _parent(path: str, role: str, policy: GuardConfig) -> dict[str, Any]:
    """The input's manifest if it is a bnr run of the right role ({} for a plain PEFT folder), after checking
    its tensors are finite, not all zero, not absurdly large, and not the buffer's."""
    if not Path(path).exists():
        raise BnrError(f"missing {role} adapter {path!r}; train it first or fix merge.{role}=")
    manifest = check_parent(path, role, f"merge.{role}") if _looks_like_run(path) else {}
    modules = read_lora(path).modules
    check_deltas(modules, f"the {role} adapter {path!r}")
    guard.assert_not_buffer(modules, f"merge.{role}={path!r}", "merge", policy)
    return manifest


def _looks_like_run(path: str) -> bool:
    """A folder with a manifest is a bnr run and must be a complete one (a corrupt or `running` manifest is refused
    by `check_parent`); a plain PEFT folder has none."""
    return is_complete(path) or (Path(path) / MANIFEST).exists()


def check_deltas(modules: dict[str, LoraModule], what: str) -> None:
    """Refuse an adapter whose deltas are all zero (untrained or wiped), non-finite or absurdly large."""
    norms = {name: factor_norm(m.scaling * m.B.double(), m.A.double()) for name, m in modules.items()}
    bad = [n for n, v in norms.items() if not math.isfinite(v) or v > MAX_DELTA_NORM]
    if bad:
        raise BnrError(
            f"{what} has a non-finite or absurd delta in {bad[0]!r} (|BA| = {norms[bad[0]]:.3g}, "
            f"limit {MAX_DELTA_NORM:g}); it is broken (or merge.scale is too large): retrain it or lower the scale"
        )
    if not any(v > 0 for v in norms.values()):
        raise BnrError(f"{what} is all zeros (an untrained or wiped LoRA); merging it would change nothing")


def merge_run(
    cfg: Config,
    *,
    extra_diagnostics: dict[str, Any] | None = None,
    extra_manifest: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
    own_user_run: bool = False,
) -> Path:
    """Merge `merge.user` and `merge.reinforce` with `merge.*` and write the run at `merge.out`.

    A caller that chose the knobs (`bnr calibrate`) adds its own sections to `merge_diagnostics.json`
    (`extra_diagnostics`) and the manifest (`extra_manifest`), and files via `write_extra(run_tmp_dir)`.
    `own_user_run`: a defense's finalize merging the UserLoRA its user job just trained. The behavioural backstop
    guards merges of adapters handed in from outside (`bnr merge`, the Python API); a finalize's output is judged by
    its evaluation (the service's safety gate), where a harmful result is the user's data, not a laundered buffer,
    and a research grid must be able to measure it. The static guard runs on both.
    """
    m = cfg.merge
    user_manifest = _parent(m.user, "user", cfg.guard)
    _parent(m.reinforce, "reinforce", cfg.guard)
    parents = [("user", m.user), ("reinforce", m.reinforce)]
    # the merged adapter is prompted like the UserLoRA it came from
    cfg = dataclasses.replace(cfg, template=user_manifest.get("template", cfg.template))
    result = merge_adapters(m.user, m.reinforce, **knobs_of(m))
    check_deltas(result.modules, "the merged adapter")
    guard.assert_not_buffer(result.modules, "the merged adapter", "merge", cfg.guard)
    base = cfg.model.name_or_path or result.base_model_name_or_path
    if m.full_model and not base:
        raise BnrError("full_model=true needs the base model: set model.name_or_path")
    if m.full_model and base:  # the full model is built from this base: the one the runs were trained on, by content
        for _, path in parents:
            if is_complete(path):
                check_same_base(path, dataclasses.replace(cfg.model, name_or_path=base))
    # `bnr merge`'s own key (its section and the two runs); a defense's finalize sets the final stage's instead
    writer = open_run(cfg, m.out, "merge", key=lambda: stage_key(cfg, ("merge",), dict(parents)))
    write_merged_adapter(
        result, writer.tmp, serving_name(dataclasses.replace(cfg.model, name_or_path=base)) if base else None
    )
    # the candidate is judged before anything else is written: a refusal leaves only the partial folder, removed
    if own_user_run:
        backstop_record: dict[str, Any] = {"ran": False, "why": "a defense's finalize of its own user job's UserLoRA"}
    else:
        backstop_record = backstop.check(cfg, base or "", writer.tmp)
    diagnostics = diagnostics_json(result)
    atomic_write_json(writer.tmp / DIAGNOSTICS, {**diagnostics, **(extra_diagnostics or {})})
    if write_extra is not None:
        write_extra(writer.tmp)
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
        behavioural_backstop=backstop_record,
        **(extra_manifest or {}),
    )
    return writer.finalize(manifest)


def _write_full(cfg: Config, base: str, result: object, out: Path) -> None:
    import torch

    from bnr.cards import chat_template_for
    from bnr.models import checkpoint_dtype, load_model_and_tokenizer

    model_cfg = dataclasses.replace(cfg.model, name_or_path=base)
    model, tokenizer = load_model_and_tokenizer(model_cfg)
    with torch.no_grad(), writing(out):
        # merged in float64, saved in the base checkpoint's own dtype (a bf16 base stays bf16, not float32)
        write_full_model(model, result, out, inplace=True, save_dtype=checkpoint_dtype(model_cfg))  # type: ignore[arg-type]
    jinja = chat_template_for(cfg.template)
    if jinja:  # a serving stack's chat API then renders the prompt format the adapter was trained with
        tokenizer.chat_template = jinja
    tokenizer.save_pretrained(str(out))
