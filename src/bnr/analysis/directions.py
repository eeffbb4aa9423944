"""Safety directions and LoRA factors for the analysis: read from adapter folders, matched to model modules."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from bnr.analysis.grads import ModuleSpec, find_modules, layer_index, module_kind, probe_factors
from bnr.errors import BnrError
from bnr.lora_files import LoraModule, read_lora

log = logging.getLogger(__name__)

PROBE = "probe"


def load_factors(path: str | Path) -> dict[str, LoraModule]:
    """Per-module LoRA factors (and scaling) of a PEFT adapter folder, keyed by module name in the causal LM."""

    lora = read_lora(path)
    return {
        name: LoraModule(A=m.A.float(), B=m.B.float(), scaling=float(m.scaling)) for name, m in lora.modules.items()
    }


def build_specs(
    model: torch.nn.Module,
    targets: list[str],
    directions: dict[str, dict[str, LoraModule]],
    loras: dict[str, dict[str, LoraModule]] | None = None,
    *,
    probe_r: int = 0,
    probe_alpha: float = 0.0,
    seed: int = 0,
) -> dict[str, ModuleSpec]:
    """One `ModuleSpec` per target Linear of `model`, with the directions and LoRAs that adapt it.

    A direction or LoRA module that the model lacks, or whose shape does not fit, is an error (it was trained
    on another base). `probe_r > 0` adds a fresh LoRA (`probe`, seeded, identical across conditions) whose
    gradient norms are what a newly started user fine-tuning would see at its first step.
    """
    modules = find_modules(model, targets)
    if not modules:
        raise BnrError(f"the model has no Linear module named {', '.join(targets)}; fix analyze.target_modules")
    for what, table in [
        *(("direction " + d, f) for d, f in directions.items()),
        *(("adapter " + n, f) for n, f in (loras or {}).items()),
    ]:
        _check_fits(what, table, modules)
    specs: dict[str, ModuleSpec] = {}
    for i, (name, (_, lin)) in enumerate(sorted(modules.items())):
        spec = ModuleSpec(name, layer_index(name), module_kind(name))
        for d, table in directions.items():
            if name in table:
                spec.directions[d] = table[name]
        for lo, table in (loras or {}).items():
            if name in table:
                spec.loras[lo] = table[name]
        if probe_r > 0:
            gen = torch.Generator().manual_seed(seed * 100_003 + i)
            spec.loras[PROBE] = probe_factors(lin.in_features, lin.out_features, probe_r, probe_alpha, gen)
        specs[name] = spec
    return specs


def _check_fits(what: str, table: dict[str, LoraModule], modules: dict[str, tuple[str, torch.nn.Linear]]) -> None:
    unknown = sorted(set(table) - set(modules))
    if unknown and not set(table) & set(modules):
        raise BnrError(
            f"{what} adapts no analysed module (e.g. {unknown[0]!r}); it was trained on another model "
            "or other target_modules"
        )
    if unknown:
        log.warning(
            "%s adapts %d modules outside analyze.target_modules (ignored), e.g. %s", what, len(unknown), unknown[0]
        )
    for name in set(table) & set(modules):
        f, lin = table[name], modules[name][1]
        if f.A.shape[1] != lin.in_features or f.B.shape[0] != lin.out_features:
            raise BnrError(
                f"{what}: module {name!r} has shape {f.B.shape[0]}x{f.A.shape[1]} but the model's is "
                f"{lin.out_features}x{lin.in_features}; use an adapter trained on this base"
            )
