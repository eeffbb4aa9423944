"""`ldifs`: fine-tuning regularised by the feature-space distance to the initial model on the training batch.

Source: J. Mukhoti, Y. Gal, P. H. S. Torr, P. K. Dokania, "Fine-tuning can cripple your foundation model;
preserving features may be the solution", TMLR 2024 (arXiv 2308.13320); reference code `LDIFSTrainer` in the
Booster lineage as released in SeokilHam/Buffer-and-Reinforce (trainer.py; script/finetune/LDIFS_ft.sh: rho 0.01,
features = the output of every decoder layer's MLP block).

Implementation: `loss_fn` = cross-entropy + weight/2 x sum over decoder layers of ||f_l(x; w) - f_l(x; w_0)||^2,
f_l the output of layer l's MLP (forward hooks on `layers.<i>.mlp`), on the micro-batch being trained. The
initial model's features come from the same model with its adapters switched off (`adapters.disabled`): the
initial UserLoRA is zero (B = 0), so that is exactly the initial model, and no second copy is held. The
feature pass is always made, also at weight 0 (so weight 0 is bitwise SFT with the same code path).

Deviations: (1) padding positions are left out of the distance (the released code sums over every position of
the left-padded batch). (2) The released code drops a layer's term when it exceeds 0.1 (an overflow guard for
bf16); the paper has no such cut, so it is off by default and `skip_above=0.1` reproduces it. (3) Gradients are
clipped at `user.train.max_grad_norm` like every stage (released: 5.0 in this trainer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from bnr import adapters
from bnr.defenses.base import Defense, UserJob, register
from bnr.errors import BnrError
from bnr.train import StepContext, TrainHooks

FEATURE_MODULE = re.compile(r"(^|\.)layers\.\d+\.mlp$")


@dataclass
class LdifsOptions:
    """`weight`: lambda of the feature distance (released rho 0.01); `skip_above`: drop a layer's term above
    this value (the released bf16 guard, 0.1; default off)."""

    weight: float = 0.01
    skip_above: float | None = None

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise BnrError(f"defenses.ldifs.weight must be >= 0 (got {self.weight})")
        if self.skip_above is not None and self.skip_above <= 0:
            raise BnrError(f"defenses.ldifs.skip_above must be > 0 (got {self.skip_above})")


def feature_modules(model: Any) -> list[torch.nn.Module]:
    """Every decoder layer's MLP block, in order (error if the architecture has none by that name)."""
    found = [m for name, m in model.named_modules() if FEATURE_MODULE.search(name)]
    if not found:
        raise BnrError("ldifs: found no `layers.<i>.mlp` modules in this model; LDIFS needs a decoder-layer MLP")
    return found


def features(model: Any, modules: list[torch.nn.Module], batch: dict[str, torch.Tensor]) -> tuple[Any, list]:
    """(model output, each module's output) of one forward pass."""
    out: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, o: out.append(o)) for m in modules]
    try:
        result = model(**batch)
    finally:
        for h in handles:
            h.remove()
    return result, out


def feature_distance(
    now: list[torch.Tensor], initial: list[torch.Tensor], mask: torch.Tensor, skip: float | None, weight: float
) -> torch.Tensor:
    """weight/2 x sum over layers of the squared L2 distance over non-padding positions."""
    total = torch.zeros((), device=mask.device)
    keep = mask.unsqueeze(-1).to(now[0].dtype)
    for a, a0 in zip(now, initial):
        term = weight / 2 * (((a - a0) * keep).float() ** 2).sum()
        if skip is None or term.item() < skip:
            total = total + term
    return total


@register
class Ldifs(Defense):
    """LDIFS (Mukhoti et al. 2024): L2 distance to the initial model's features as a regulariser"""

    name = "ldifs"
    options_class = LdifsOptions

    def training_hooks(self, job: UserJob, model: Any, tokenizer: Any, examples: list[Any]) -> TrainHooks:
        opts: LdifsOptions = job.options
        modules = feature_modules(model)

        def loss_fn(m: Any, batch: dict[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
            out, now = features(m, modules, batch)
            with torch.no_grad(), adapters.disabled(m):
                _, initial = features(m, modules, batch)
            return out.loss + feature_distance(now, initial, batch["attention_mask"], opts.skip_above, opts.weight)

        return TrainHooks(loss_fn=loss_fn)
