"""`lisa`: Lazy safety alignment - the user's fine-tuning alternates with alignment steps on refusal pairs, each
state pulled towards the other state's last weights by a proximal term.

Source: T. Huang, S. Hu, F. Ilhan, S. F. Tekin, L. Liu, "Lisa: Lazy Safety Alignment for Large Language Models
against Harmful Fine-tuning Attack via Bi-State Optimization", NeurIPS 2024 (arXiv 2405.18641); reference code
`LisaTrainer` in git-disl/Lisa and as released in SeokilHam/Buffer-and-Reinforce (trainer.py, train.py,
script/finetune/lisa_ft.sh: alignment_step 10, finetune_step 90, rho 10, guide_data_num 5000 LAT refusal pairs).

Implementation through the loop's seams:
- `batch_source`: optimizer steps cycle through `alignment_steps` alignment steps, then `finetune_steps` user
  steps (starting with alignment, as released). An alignment step takes an alignment micro-batch in place of
  the user's, and the user's stream advances anyway (the released trainer discards the Trainer's batch), so the
  planned number of steps is that of the user's data. The phase is a function of the step index alone, so a
  resumed run replays the same streams.
- `loss_fn`: cross-entropy + rho/2 ||w - w_other||^2 over the trainable (UserLoRA) weights, where w_other is the
  other state's checkpoint: the weights at the end of the last user phase while aligning, and at the end of the
  last alignment phase while fine-tuning (both start as the initial weights). As released, the term is off for
  the first `proximal_after` (10%) of the steps.
- a `StepCallback` takes the checkpoint when the phase changes and saves both checkpoints with the training
  checkpoint (`state_dict`), so resume equals an uninterrupted run.

Deviations: (1) the phase switches per optimizer step; the released trainer counts micro-batches (the same with
grad_accum 1, its setting). (2) The alignment data are the provider's refusal pairs (`reinforce.refusal_data`)
unless `data` is given; the count `n` defaults to all of them (released: 5000). (3) The proximal warm-up is
measured in planned optimizer steps (released: 0.1 x steps per epoch x epochs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bnr.config import DataConfig
from bnr.defenses.base import Defense, UserJob, from_section, register
from bnr.defenses.streams import stream_for
from bnr.errors import BnrError
from bnr.train import MicroBatch, StepCallback, StepContext, TrainHooks, cross_entropy_loss, example_batches

ALIGN, USER = "alignment", "user"


@dataclass
class LisaOptions:
    """`alignment_steps` / `finetune_steps`: steps per phase (the proportion); `rho`: proximal weight;
    `proximal_after`: fraction of the planned steps before the proximal term starts; `data` / `n`: the alignment
    set (default `reinforce.refusal_data`, all records)."""

    alignment_steps: int = 10
    finetune_steps: int = 90
    rho: float = 10.0
    proximal_after: float = 0.1
    data: DataConfig | None = from_section("reinforce.refusal_data")
    n: int | None = None

    def __post_init__(self) -> None:
        where = "defenses.lisa"
        if self.alignment_steps < 0 or self.finetune_steps < 1:
            raise BnrError(f"{where}: alignment_steps must be >= 0 and finetune_steps >= 1")
        if self.rho < 0:
            raise BnrError(f"{where}.rho must be >= 0 (got {self.rho})")
        if not 0 <= self.proximal_after <= 1:
            raise BnrError(f"{where}.proximal_after must be in [0, 1] (got {self.proximal_after})")
        if self.n is not None and self.n < 1:
            raise BnrError(f"{where}.n must be >= 1 (got {self.n})")


def phase(options: LisaOptions, step: int) -> str:
    """The state of optimizer step `step` (0-based): each cycle is the alignment steps, then the user steps."""
    return ALIGN if step % (options.alignment_steps + options.finetune_steps) < options.alignment_steps else USER


class Checkpoints(StepCallback):
    """Both states' weight checkpoints; when the phase changes, the state just ended stores its weights."""

    def __init__(self, options: LisaOptions) -> None:
        self.options = options
        self.weights: dict[str, dict[str, torch.Tensor]] = {}

    def on_train_start(self, model: torch.nn.Module, total: int) -> None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self.weights:  # fresh run (a resumed one has them from load_state_dict)
            initial = {n: p.detach().clone() for n, p in params.items()}
            self.weights = {ALIGN: initial, USER: {n: t.clone() for n, t in initial.items()}}
        self.weights = {s: {n: t.to(params[n].device) for n, t in w.items()} for s, w in self.weights.items()}

    def after_optimizer_step(self, model: torch.nn.Module, ctx: StepContext, loss: float) -> dict[str, float]:
        now = phase(self.options, ctx.step)
        if phase(self.options, ctx.step + 1) != now:
            self.weights[now] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return {"lisa_alignment": float(now == ALIGN)}

    def other(self, state: str) -> dict[str, torch.Tensor]:
        return self.weights[USER if state == ALIGN else ALIGN]

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = state["weights"]


@register
class Lisa(Defense):
    """Lisa (Huang et al. 2024): alternating alignment (refusal) and user steps with a proximal term"""

    name = "lisa"
    options_class = LisaOptions

    def training_hooks(self, job: UserJob, model: Any, tokenizer: Any, examples: list[Any]) -> TrainHooks:
        cfg, opts = job.cfg, job.options
        train = cfg.user.train
        align = stream_for(cfg, tokenizer, opts.data, opts.n, train, cfg.seed + 7, "lisa")
        user_source = example_batches(examples, train, cfg.seed)
        accum = train.grad_accum

        def source() -> Iterator[MicroBatch]:
            user, k, aligned = user_source(), 0, 0
            while True:
                mb = next(user)
                if phase(opts, k // accum) == ALIGN:
                    mb = MicroBatch(align.batch(aligned), ALIGN)
                    aligned += 1
                yield mb
                k += 1

        checkpoints = Checkpoints(opts)

        def loss_fn(m: Any, batch: dict[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
            loss = cross_entropy_loss(m, batch, ctx)
            if opts.rho > 0 and ctx.step > opts.proximal_after * ctx.total:
                anchor = checkpoints.other(ctx.stream)
                sq = sum(((p - anchor[n]) ** 2).sum() for n, p in m.named_parameters() if p.requires_grad)
                loss = loss + opts.rho / 2 * sq
            return loss

        job.notes["alignment_records"] = len(align.examples)
        return TrainHooks(batch_source=source, loss_fn=loss_fn, callbacks=[checkpoints])
