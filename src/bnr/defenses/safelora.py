"""`safelora`: after plain LoRA fine-tuning, project the UserLoRA update onto the alignment subspace in the
layers where it strays from it.

Source: C.-Y. Hsu, Y.-L. Tsai, C.-H. Lin, P.-Y. Chen, C.-M. Yu, C.-Y. Huang, "Safe LoRA: the Silver Lining of
Reducing Safety Risks when Finetuning Large Language Models", NeurIPS 2024 (arXiv 2405.16833); repository
IBM/SafeLoRA, and the `SafeLoRA` class of SeokilHam/Buffer-and-Reinforce (trainer.py, script/finetune/
safelora.sh) that the Buffer-and-Reinforce comparison ran.

Method, per adapted module (the alignment artifact, `bnr.defenses.alignment`, holds V = W_aligned - W_unaligned):
- C = V V^T / ||V||_F (d_out x d_out; as in the paper and both codes, not an orthogonal projector);
- the update dW = s B A and its projection C dW; their cosine similarity (flattened);
- `select: threshold`: project the modules with similarity < `threshold`; `select: number`: project the
  `num_layers` modules of lowest similarity;
- a projected module's deliverable factors are (C B, A): C (B A) = (C B) A, so the projected update is again a
  LoRA of rank r with the same A and scaling; unprojected modules are copied bit for bit. The deliverable is a
  PEFT adapter folder at `user.final_out` (manifest `defense_notes`: every module's similarity and which
  were projected).

Deviations: the similarity is computed in factor space (<C B A, B A> = tr((C B)^T B A A^T)), in float64, without
forming the d_out x d_in products - the same number up to rounding; the reference rounds it to 5 decimals and
projects at `<=` the threshold, here it is `<` (the paper's wording), unrounded; `number` selects exactly k modules
(ties by module order) where the reference takes every module at or below the k-th value. Defaults: threshold
0.5 and num_layers 10 are the IBM code's; the Buffer-and-Reinforce fork ran `threshold` mode at 0.6. The
alignment matrix covers the UserLoRA's target modules (the reference: every parameter whose name contains one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from bnr.defenses.alignment import ALIGNMENT, load_alignment, project, require_unaligned
from bnr.defenses.base import Defense, UserJob, register
from bnr.defenses.edit import write_edited_adapter
from bnr.errors import BnrError
from bnr.lora_files import LoraModule, read_lora


@dataclass
class SafeLoraOptions:
    """`select`: `threshold` (project modules with similarity < `threshold`) or `number` (the `num_layers`
    least similar modules)."""

    select: Literal["threshold", "number"] = "threshold"
    threshold: float = 0.5
    num_layers: int = 10

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise BnrError(f"defenses.safelora.threshold must be in [-1, 1] (got {self.threshold})")
        if self.num_layers < 0:
            raise BnrError(f"defenses.safelora.num_layers must be >= 0 (got {self.num_layers})")


def similarity(C_B: Tensor, B: Tensor, A: Tensor) -> float:
    """Cosine similarity of vec(C B A) and vec(B A), in factor space (float64)."""
    CB, B, A = C_B.double(), B.double(), A.double()
    G = A @ A.T
    dot = torch.trace(CB.T @ B @ G)
    n1 = torch.trace(CB.T @ CB @ G).clamp_min(0).sqrt()
    n2 = torch.trace(B.T @ B @ G).clamp_min(0).sqrt()
    if n1 == 0 or n2 == 0:
        return 0.0
    return float(dot / (n1 * n2))


def choose(cos: dict[str, float], opts: SafeLoraOptions) -> list[str]:
    """The modules to project: similarity below the threshold, or the `num_layers` lowest."""
    if opts.select == "threshold":
        return [name for name, c in cos.items() if c < opts.threshold]
    ranked = sorted(cos, key=lambda name: cos[name])  # stable: ties keep module order
    return ranked[: opts.num_layers]


def project_adapter(
    modules: dict[str, LoraModule], V: dict[str, Tensor], opts: SafeLoraOptions
) -> tuple[dict[str, LoraModule], dict[str, float]]:
    """(projected modules with B -> C B, every module's similarity)."""
    missing = sorted(set(modules) - set(V))
    if missing:
        raise BnrError(f"the alignment artifact lacks modules {missing[:3]}; rebuild it for these target modules")
    projected_B = {name: project(V[name], m.B.float()) for name, m in modules.items()}
    cos = {name: similarity(projected_B[name], m.B.float(), m.A.float()) for name, m in modules.items()}
    chosen = choose(cos, opts)
    out = {}
    for name in chosen:
        m = modules[name]
        out[name] = LoraModule(A=m.A, B=projected_B[name].to(m.B.dtype), scaling=m.scaling)
    return out, cos


@register
class SafeLora(Defense):
    """SafeLoRA (Hsu et al. 2024): project LoRA updates onto the aligned-minus-unaligned subspace where dissimilar"""

    name = "safelora"
    options_class = SafeLoraOptions
    trains_like = "sft"
    final_artifacts = (ALIGNMENT,)

    def check(self, job: UserJob) -> list[str]:
        require_unaligned(job.cfg, self.name)
        return []

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        opts: SafeLoraOptions = job.options
        factors = read_lora(user_run)
        replaced, cos = project_adapter(factors.modules, load_alignment(job.providers[ALIGNMENT]), opts)
        notes = {"similarity": cos, "projected": sorted(replaced)}
        return write_edited_adapter(job, user_run, self.name, replaced, defense_notes=notes)
