"""A 2-D slice of the loss landscape around the current weights (Li et al. 2018, filter-normalised).

L(a, b) = mean_i L_i(W + a d1 + b d2) over the analysed Linear weights, where d1, d2 are Gaussian directions
whose every row (output filter) is rescaled to the norm of that row of W. Evaluated with
`torch.func.functional_call`, so the model's own parameters are never written. It holds two directions of the
analysed weights (about twice their memory): meant for small and medium models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bnr.analysis.grads import find_modules, per_sample_loss
from bnr.data.tokenize import Example, collate


def filter_normalised(weight: Tensor, generator: torch.Generator) -> Tensor:
    d = torch.randn(weight.shape, generator=generator, dtype=torch.float32).to(weight.device, weight.dtype)
    scale = weight.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + 1e-10)
    return d * scale


def loss_slice(
    model: torch.nn.Module,
    examples: list[Example],
    targets: list[str],
    *,
    pad_id: int,
    steps: int = 9,
    span: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, Any]:
    """{"alphas", "betas", "loss"[beta][alpha]} on a steps x steps grid over [-span, span]^2."""
    weights = {path + ".weight": lin.weight for path, lin in find_modules(model, targets).values()}
    gen = torch.Generator().manual_seed(seed)
    d1 = {n: filter_normalised(w.detach(), gen) for n, w in sorted(weights.items())}
    d2 = {n: filter_normalised(w.detach(), gen) for n, w in sorted(weights.items())}
    grid = torch.linspace(-span, span, steps).tolist()
    device = next(model.parameters()).device
    batches = [
        {k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_id).items()}
        for i in range(0, len(examples), batch_size)
    ]
    was_training = model.training
    model.eval()
    surface = []
    try:
        with torch.no_grad():
            for b in grid:
                row = []
                for a in grid:
                    params = {n: w.detach() + a * d1[n] + b * d2[n] for n, w in weights.items()}
                    row.append(_mean_loss(model, params, batches))
                surface.append(row)
    finally:
        model.train(was_training)
    return {
        "alphas": grid,
        "betas": grid,
        "loss": surface,
        "center_loss": surface[steps // 2][steps // 2] if steps % 2 else None,
    }


def _mean_loss(model: torch.nn.Module, params: dict[str, Tensor], batches: list[dict[str, Tensor]]) -> float:
    total, count = 0.0, 0
    for batch in batches:
        out = torch.func.functional_call(
            model,
            params,
            args=(),
            kwargs={"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
            strict=False,
        )
        losses = per_sample_loss(out.logits, batch["labels"])
        total += float(losses.sum())
        count += len(losses)
    return total / max(count, 1)
