"""`asft`: LoRA fine-tuning with a penalty on the part of the update that leaves the alignment direction.

Source: "AsFT: Anchoring Safety During LLM Fine-Tuning Within Narrow Safety Basin" (2025; authors and arXiv
number not recorded here, see the repository's README); repository PKU-YuanGroup/AsFT
(utils/AsFT_train_utils.py `train`, AsFT_finetuning.py, scripts/gsm8k/AsFT_reg1_p_0.1.sh), and `AsFTTrainer`
in SeokilHam/Buffer-and-Reinforce (trainer.py, script/finetune/asft_gsm8k.sh, which the comparison ran).

Method: with V = W_aligned - W_unaligned per adapted module (the `alignment` provider artifact) and the alignment
matrix C = V V^T / ||V||_F (SafeLoRA's), every micro-batch minimises

    cross-entropy + weight * sum over modules ||(I - C) B A||_F^2

so updates along the alignment direction are free and updates orthogonal to it (which leave the narrow safety
basin) are penalised. As in both codes the penalty is on B A, without the LoRA scaling s, and is added to each
micro-batch's loss before the loop divides by the accumulation steps (the Hugging Face Trainer fork's behaviour;
the llama-recipes original adds it after dividing the cross-entropy only). weight 0 is plain SFT, bit for bit
(the loss function is the default one then).

Deviations: ||(I - C) B A||_F^2 is computed in factor space as tr(D^T D A A^T) with D = B - C B (d_out x r), the
same value without forming d_out x d_out or d_out x d_in matrices. Default weight 1 is the AsFT script's
(`lambda_reg 1`); the Buffer-and-Reinforce comparison ran `regul_lambda 10`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bnr.defenses.alignment import ALIGNMENT, load_alignment, project, require_unaligned
from bnr.defenses.base import Defense, UserJob, register
from bnr.errors import BnrError


@dataclass
class AsftOptions:
    """`weight`: the regulariser's weight lambda (0 = plain SFT)."""

    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise BnrError(f"defenses.asft.weight must be >= 0 (got {self.weight})")


def orthogonal_penalty(V: Tensor, B: Tensor, A: Tensor) -> Tensor:
    """||(I - C) B A||_F^2 with C = V V^T / ||V||_F, in factor space (differentiable in A and B)."""
    D = B - project(V, B)
    return torch.trace(D.T @ D @ (A @ A.T))


class AsftLoss:
    """cross-entropy + weight * sum of `orthogonal_penalty` over the UserLoRA's modules."""

    def __init__(self, weight: float, pairs: list[tuple[Tensor, torch.nn.Linear, torch.nn.Linear]]) -> None:
        self.weight = weight
        self.pairs = pairs

    def penalty(self) -> Tensor:
        return torch.stack([orthogonal_penalty(V, b.weight, a.weight) for V, a, b in self.pairs]).sum()

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor], ctx: Any) -> Tensor:
        from bnr.train import cross_entropy_loss

        return cross_entropy_loss(model, batch, ctx) + self.weight * self.penalty()


@register
class Asft(Defense):
    """AsFT (2025): SFT plus a penalty on LoRA updates orthogonal to the aligned-minus-unaligned direction"""

    name = "asft"
    options_class = AsftOptions
    train_artifacts = (ALIGNMENT,)

    def check(self, job: UserJob) -> list[str]:
        require_unaligned(job.cfg, self.name)
        return []

    def training_hooks(self, job: UserJob, model: Any, tokenizer: Any, examples: list[Any]) -> Any:
        from bnr import adapters
        from bnr.train import TrainHooks

        opts: AsftOptions = job.options
        if opts.weight == 0:
            return TrainHooks()
        V = load_alignment(job.providers[ALIGNMENT])
        layers = adapters.lora_layers(model, adapters.USER)
        missing = sorted(set(layers) - set(V))
        if missing:
            raise BnrError(f"the alignment artifact lacks modules {missing[:3]}; rebuild it for these target modules")
        device = next(model.parameters()).device
        pairs = [(V[name].to(device), a, b) for name, (a, b) in layers.items()]
        return TrainHooks(loss_fn=AsftLoss(opts.weight, pairs))
