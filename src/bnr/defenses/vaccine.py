"""`vaccine`: perturbation-aware alignment - the provider re-aligns the base while its hidden states are pushed by
the worst-case (gradient-direction) perturbation, so later harmful fine-tuning drifts them less.

Source: T. Huang, S. Hu, L. Liu, "Vaccine: Perturbation-aware Alignment for Large Language Models against Harmful
Fine-tuning Attack", NeurIPS 2024 (arXiv 2402.01109); reference repository git-disl/Vaccine (`VaccineTrainer`,
script/alignment/Vaccine.sh, run with intensity 2 in its README), also in git-disl/Booster.

Each micro-batch of the alignment set takes two passes (`vaccine_loss`, the loop's `loss_fn` seam):
1. forward + backward to the output of every block's attention module (`self_attn`, whose output the reference
   perturbs), without touching the weight gradients: g_l = dL/dh_l;
2. e_l = rho * g_l / ||(g_1, ..., g_L)|| (one norm over all layers jointly, as released), added to those outputs
   in a second forward; the loss the loop backpropagates is that perturbed loss (min over weights of the max over
   perturbations of norm rho).
The user job is plain SFT on the re-aligned base (`bnr.defenses.realign`).

Deviations: (1) the first pass uses `torch.autograd.grad` on the hidden states (the reference runs a full backward
and then zeroes the weight gradients: the same perturbation, one weight-gradient pass fewer); (2) the perturbation
is a constant added to the output (the reference overwrites `output.data`, which also leaves no gradient path);
(3) the alignment pass runs on the already-aligned served base with the preset's alignment recipe (see realign).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bnr.defenses.base import register
from bnr.defenses.realign import (
    RealignedBase,
    RealignOptions,
    block_modules,
    captured,
    global_norm,
    register_realign_provider,
)
from bnr.errors import BnrError
from bnr.locations import output

NAME = "vaccine"
ARTIFACT = "vaccine-aligned"


@dataclass
class VaccineOptions(RealignOptions):
    """`rho`: the perturbation's norm (the paper's intensity, 2 in the reference README); provider fields as in
    `bnr.defenses.realign.RealignOptions`."""

    rho: float = 2.0
    out: str = output("runs/vaccine-aligned")

    def __post_init__(self) -> None:
        self._check_counts(NAME)
        if self.rho < 0:
            raise BnrError(f"defenses.{NAME}.rho must be >= 0 (got {self.rho})")


@contextmanager
def perturbed(modules: Sequence[torch.nn.Module], perturbations: Sequence[Tensor]) -> Iterator[None]:
    """Add `perturbations[i]` to the (first) output of `modules[i]` in every forward inside the block."""

    def hook_for(e: Tensor) -> Callable[..., Any]:
        def hook(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (output[0] + e.to(output[0].dtype), *output[1:])
            return output + e.to(output.dtype)

        return hook

    handles = [m.register_forward_hook(hook_for(e)) for m, e in zip(modules, perturbations)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def output_gradients(
    model: Any, batch: dict[str, Tensor], modules: Sequence[torch.nn.Module]
) -> tuple[Tensor, list[Tensor]]:
    """(loss, dloss/d output of each module) of one forward, without accumulating any weight gradient."""
    with captured(modules) as outs:
        loss = model(**batch).loss
    if len(outs) != len(modules):
        raise BnrError(f"{len(modules) - len(outs)} of the hooked modules did not run in the forward pass")
    grads = torch.autograd.grad(loss, outs, allow_unused=True)
    return loss.detach(), [torch.zeros_like(o) if g is None else g.detach() for o, g in zip(outs, grads)]


def scaled_to_norm(grads: Sequence[Tensor], rho: float) -> list[Tensor]:
    """e_l = rho * g_l / (||(g_1..g_L)|| + 1e-7): one norm over all tensors jointly (Vaccine's and T-Vaccine's)."""
    norm = global_norm(grads)
    return [(g.float() * (rho / (norm + 1e-7))).to(g.dtype) for g in grads]


def vaccine_perturbation(
    model: Any, batch: dict[str, Tensor], modules: Sequence[torch.nn.Module], rho: float
) -> list[Tensor]:
    """The worst-case perturbation of norm `rho` of the outputs of `modules` for `batch` (pass 1)."""
    _, grads = output_gradients(model, batch, modules)
    return scaled_to_norm(grads, rho)


def perturbed_loss(model: Any, batch: dict[str, Tensor], modules: Sequence[torch.nn.Module], rho: float) -> Tensor:
    """Pass 1 (the perturbation) then pass 2: the loss with the perturbation added, to be backpropagated."""
    perturbations = vaccine_perturbation(model, batch, modules, rho)
    with perturbed(modules, perturbations):
        return model(**batch).loss


def vaccine_loss(rho: float) -> Callable[[Any, dict[str, Tensor], Any], Tensor]:
    """The loop's `loss_fn`: the perturbation-aware loss over the attention outputs of every block."""

    def loss_fn(model: Any, batch: dict[str, Tensor], ctx: Any) -> Tensor:
        return perturbed_loss(model, batch, block_modules(model, "self_attn"), rho)

    return loss_fn


def _hooks(cfg: Any, model: Any, tokenizer: Any, o: VaccineOptions) -> Any:
    from bnr.train import TrainHooks

    return TrainHooks(loss_fn=vaccine_loss(o.rho))


register_realign_provider(
    NAME, ARTIFACT, "Vaccine: alignment with rho-perturbed attention outputs (`defenses.vaccine`)", _hooks
)


@register
class Vaccine(RealignedBase):
    """Vaccine (Huang et al. 2024, arXiv 2402.01109): perturbation-aware re-alignment, then plain SFT on it"""

    name = NAME
    options_class = VaccineOptions
    train_artifacts = (ARTIFACT,)
