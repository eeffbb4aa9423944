"""`booster`: attenuating the harmful perturbation - the provider re-aligns the base with a term that penalises how
much one simulated harmful fine-tuning step would lower the harmful loss.

Source: T. Huang, S. Hu, F. Ilhan, S. F. Tekin, L. Liu, "Booster: Tackling Harmful Fine-tuning for Large Language
Models via Attenuating Harmful Perturbation", ICLR 2025 (arXiv 2409.01586); reference repository git-disl/Booster
(`BoosterAlignmentTrainer`, script/alignment/smooth_align.sh: lambda 5, alpha 0.1, 5000 harmful samples).

Objective per step, with w the trainable weights, f the alignment loss (harmful prompt -> refusal) and h the
harmful loss (harmful prompt -> harmful answer, the provider's harmful set):
    min_w  f(w) + lambda * [ h(w) - h(w - alpha * grad h(w) / ||grad h(w)||) ]
The bracket (the attenuation term) is how much a normalised harmful step of size alpha reduces h. As released, its
gradient is taken to first order: grad h(w) - grad h(w') at the stepped weights w', the step treated as a
constant (`attenuation_gradient`). The loop's `loss_fn` returns f(w) plus a linear surrogate whose value is 0 and
whose gradient is lambda times that difference, so the loop's one backward gives the released update. Harmful
micro-batches come from a seeded side stream (`bnr.defenses.streams`), drawn by step index (exact resume).
The user job is plain SFT on the re-aligned base (`bnr.defenses.realign`).

Deviations: (1) the two harmful gradients come from `torch.autograd.grad` (no weight-gradient buffers to save and
zero), and the weights are restored from a copy instead of adding the step back (bitwise restore); (2) the
harmful stream's batch size is `train.batch_size` (the reference uses 10, equal to its alignment batch); (3) the
alignment pass runs on the already-aligned served base with the preset's alignment recipe (see realign).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bnr.config import DataConfig
from bnr.defenses.base import register
from bnr.defenses.realign import RealignedBase, RealignOptions, global_norm, harmful_stream, register_realign_provider
from bnr.defenses.streams import IndexedStream
from bnr.errors import BnrError
from bnr.locations import output

NAME = "booster"
ARTIFACT = "booster-aligned"


@dataclass
class BoosterOptions(RealignOptions):
    """`lamb` (lambda, the attenuation term's weight, 5), `alpha` (the simulated harmful step's size, 0.1),
    `harmful_data` / `n_harmful` (default `buffer.data` / `buffer.n`); provider fields as in `RealignOptions`."""

    lamb: float = 5.0
    alpha: float = 0.1
    harmful_data: DataConfig | None = None
    n_harmful: int | None = None
    out: str = output("runs/booster-aligned")

    def __post_init__(self) -> None:
        self._check_counts(NAME, "n_harmful")
        for key in ("lamb", "alpha"):
            if getattr(self, key) < 0:
                raise BnrError(f"defenses.{NAME}.{key} must be >= 0 (got {getattr(self, key)})")


def _grads(loss: Tensor, params: Sequence[torch.nn.Parameter]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


def attenuation_gradient(
    model: Any, params: Sequence[torch.nn.Parameter], harmful: dict[str, Tensor], alpha: float
) -> tuple[float, list[Tensor]]:
    """(h(w) - h(w'), grad h(w) - grad h(w')) with w' = w - alpha * grad h(w) / ||grad h(w)||; the weights are
    restored bitwise afterwards. Zero (both) when alpha is 0."""
    h0 = model(**harmful).loss
    g0 = _grads(h0, params)
    step = alpha / (float(global_norm(g0)) + 1e-7)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, g in zip(params, g0):
                p.sub_(g.to(p.dtype), alpha=step)
        h1 = model(**harmful).loss
        g1 = _grads(h1, params)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return float(h0.detach()) - float(h1.detach()), [a - b for a, b in zip(g0, g1)]


def linear_surrogate(params: Sequence[torch.nn.Parameter], direction: Sequence[Tensor]) -> Tensor:
    """A scalar whose value is 0 and whose gradient with respect to `params` is `direction`."""
    dot = sum((p * d.to(p.dtype)).sum() for p, d in zip(params, direction))
    assert isinstance(dot, Tensor)
    return dot - dot.detach()


def booster_loss(
    harmful: IndexedStream, lamb: float, alpha: float, grad_accum: int, pad_id: int
) -> Callable[[Any, dict[str, Tensor], Any], Tensor]:
    """The loop's `loss_fn`: alignment loss + lambda x the attenuation term's (first-order) gradient."""

    def loss_fn(model: Any, batch: dict[str, Tensor], ctx: Any) -> Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        side = harmful.collated(ctx.step * grad_accum + ctx.micro, pad_id, batch["input_ids"].device)
        _, direction = attenuation_gradient(model, params, side, alpha)
        return model(**batch).loss + lamb * linear_surrogate(params, direction)

    return loss_fn


def _hooks(cfg: Any, model: Any, tokenizer: Any, o: BoosterOptions) -> Any:
    from bnr.train import TrainHooks

    assert o.train is not None
    harmful = harmful_stream(cfg, tokenizer, o, "booster harmful")
    return TrainHooks(loss_fn=booster_loss(harmful, o.lamb, o.alpha, o.train.grad_accum, tokenizer.pad_token_id))


register_realign_provider(
    NAME, ARTIFACT, "Booster: alignment + lambda x harmful-perturbation attenuation (`defenses.booster`)", _hooks
)


@register
class Booster(RealignedBase):
    """Booster (Huang et al. 2025, arXiv 2409.01586): re-alignment attenuating the harmful perturbation, then SFT"""

    name = NAME
    options_class = BoosterOptions
    train_artifacts = (ARTIFACT,)
