"""Provider artifact `alignment`: the alignment direction V = W_aligned - W_unaligned of every adapted module.

SafeLoRA (Hsu et al. 2024) and AsFT (2025) both build their "alignment matrix" from the weights of a safety
aligned model and of the same model before alignment (Llama-2-7b-chat minus Llama-2-7b in the papers). This
stage computes V once per (aligned, unaligned, target modules) and stores it, so a sweep shares it:

- aligned = `model.name_or_path` (the base every user job fine-tunes), unaligned = `model.unaligned`
  (`builtin:toy-unaligned` for the toy world; the original `builtin:smollm2` for the SmolLM2 preset, whose
  aligned base is the output of `bnr align` - `pipeline` fills `model.unaligned` in that case);
- modules = every Linear layer whose name ends in one of `user.lora.target_modules` (the modules the UserLoRA
  adapts, so each LoRA pair has its V);
- the run directory (`user.alignment`, built by `pipeline`) holds `alignment.safetensors` (module name ->
  V, float32) and a manifest. The projection C = V V^T / ||V||_F (d_out x d_out) is never formed:
  C X = V (V^T X) / ||V||_F costs one pass over V per product (`project`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch import Tensor

from bnr.config import Config
from bnr.errors import BnrError
from bnr.runs.providers import Provider, register_provider

log = logging.getLogger(__name__)
ALIGNMENT = "alignment"
ALIGNMENT_FILE = "alignment.safetensors"


def _targets_match(name: str, targets: list[str]) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf in targets or any(name == t or name.endswith("." + t) for t in targets)


def linear_weights(model: torch.nn.Module, targets: list[str]) -> dict[str, Tensor]:
    """Module name -> weight of every Linear layer whose name ends in one of `targets`."""
    return {
        name: mod.weight.detach().float().cpu()
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and _targets_match(name, targets)
    }


def alignment_direction(aligned: dict[str, Tensor], unaligned: dict[str, Tensor]) -> dict[str, Tensor]:
    """V = W_aligned - W_unaligned per module; both models must have the same modules and shapes."""
    if set(aligned) != set(unaligned):
        missing = sorted(set(aligned) ^ set(unaligned))[:3]
        raise BnrError(f"aligned and unaligned models differ in modules ({missing}...); use the same architecture")
    out = {}
    for name, w in aligned.items():
        if w.shape != unaligned[name].shape:
            raise BnrError(f"module {name!r}: aligned {tuple(w.shape)} vs unaligned {tuple(unaligned[name].shape)}")
        out[name] = (w - unaligned[name]).contiguous()
    return out


def project(V: Tensor, X: Tensor) -> Tensor:
    """C X with C = V V^T / ||V||_F (SafeLoRA's and AsFT's alignment matrix), without forming C."""
    norm = torch.linalg.matrix_norm(V)
    if norm == 0:
        return torch.zeros_like(X)
    return (V @ (V.T @ X)) / norm


def load_alignment(run: str | Path) -> dict[str, Tensor]:
    """The V tensors of an `alignment` run directory (module name -> V)."""
    from safetensors.torch import load_file

    path = Path(run) / ALIGNMENT_FILE
    if not path.is_file():
        raise BnrError(f"{str(run)!r} has no {ALIGNMENT_FILE}; build it with `bnr pipeline` or fix user.alignment")
    return load_file(str(path), device="cpu")


def require_unaligned(cfg: Config, who: str) -> str:
    if not cfg.model.unaligned:
        raise BnrError(
            f"defense {who!r} needs model.unaligned (the base before safety alignment, e.g. builtin:toy-unaligned); "
            "set it"
        )
    return cfg.model.unaligned


def build(cfg: Config) -> Path:
    """Compute V for `cfg`'s (aligned, unaligned) pair and write the run directory `cfg.user.alignment`."""
    from safetensors.torch import save_file

    from bnr.models import load_model, model_identity
    from bnr.runs.opening import manifest_for, open_run

    unaligned_name = require_unaligned(cfg, "alignment")
    targets = list(cfg.user.lora.target_modules)
    cpu = dataclasses.replace(cfg.model, device="cpu", dtype="float32")
    aligned = linear_weights(load_model(cpu), targets)
    other = dataclasses.replace(cpu, name_or_path=unaligned_name, revision=None, gguf_file=None)
    V = alignment_direction(aligned, linear_weights(load_model(other), targets))
    if not V:
        raise BnrError(f"no Linear module matches user.lora.target_modules={targets}; fix the target modules")
    if all(not torch.any(v) for v in V.values()):
        raise BnrError(
            f"model.unaligned={unaligned_name!r} has the same weights as the aligned base; set the pre-alignment model"
        )
    writer = open_run(cfg, cfg.user.alignment, ALIGNMENT)
    save_file(V, str(writer.tmp / ALIGNMENT_FILE), metadata={"format": "pt"})
    norms = {name: round(float(torch.linalg.matrix_norm(v)), 6) for name, v in V.items()}
    log.info("alignment direction: %d modules, mean ||V||_F %.4g", len(V), sum(norms.values()) / len(norms))
    manifest = manifest_for(
        cfg,
        parents=[],
        data={},
        unaligned_model=model_identity(other),
        target_modules=targets,
        norms=norms,
        contains_buffer=False,
    )
    return writer.finalize(manifest)


def _place(cfg: Config, path: str) -> Config:
    return dataclasses.replace(cfg, user=dataclasses.replace(cfg.user, alignment=path))


register_provider(
    Provider(
        ALIGNMENT,
        "alignment direction V = W_aligned - W_unaligned per adapted module (`model.unaligned`)",
        "user.alignment",
        ("model.unaligned", "user.lora.target_modules"),
        (),
        lambda cfg: cfg.user.alignment,
        _place,
        build,
    )
)
