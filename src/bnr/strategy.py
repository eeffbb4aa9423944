"""How the one training loop runs across processes: a distribution strategy holds what differs between one
process, data parallel and FSDP - who computes which examples of a micro-batch, how the gradients and the loss
are reduced, how the weights are sharded, and how a checkpoint gathers and restores them.

`strategy_for(model, seed, callbacks)` prepares the model (launched: every rank joins and checks it starts from
the same weights; FSDP: the weights are sharded in place) and returns the strategy; `strategy_of(model)` is the
strategy of a model already prepared (loading a checkpoint outside the loop).

Launched, the same config takes the same steps on any number of processes (equal up to float summation order;
dropout masks differ). Under FSDP (`accelerate launch --use_fsdp --fsdp_version 2`) the model is sharded in place
before the optimizer is built and stays sharded afterwards (`bnr.adapters.save_adapter` gathers the adapter it
saves); step callbacks are refused there.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from bnr import distributed
from bnr.data.tokenize import IGNORE_INDEX, Example
from bnr.errors import BnrError

log = logging.getLogger(__name__)


class Single:
    """One process: every example of a micro-batch here, nothing to reduce; each micro-batch's loss is checked."""

    launched = False
    sharded = False

    def share(self, examples: list[Example]) -> tuple[list[Example], float] | None:
        """(this process's examples of a micro-batch, their weight), or None when it has none to compute."""
        return examples, 1.0

    def weigh(self, loss: torch.Tensor, weight: float) -> torch.Tensor:
        return loss

    def reduce(self, params: list[torch.nn.Parameter], step_loss: float, device: torch.device) -> float:
        """Make every process's gradients the whole step's; returns the step's loss."""
        return step_loss

    def gather(self, model: torch.nn.Module, optimizer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(the trainable weights by name, on the CPU, and the optimizer state) for a checkpoint."""
        params = {n: distributed.full_tensor(p.detach()).cpu() for n, p in model.named_parameters() if p.requires_grad}
        return params, optimizer.state_dict()

    def restore(self, model: torch.nn.Module, optimizer: Any, params: dict[str, Any], optim: dict[str, Any]) -> None:
        """Load a checkpoint's `gather`ed weights and optimizer state."""
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in params.items():
                named[n].copy_(t)
        optimizer.load_state_dict(optim)


class DataParallel(Single):
    """Launched, the whole model on every process: each computes its share of a micro-batch (weighted by label
    tokens), the gradients and the loss are summed in one collective."""

    launched = True

    def share(self, examples: list[Example]) -> tuple[list[Example], float] | None:
        mine, weight = my_share(examples)
        return (mine, weight) if mine else None  # a short micro-batch: this rank has no example of it

    def weigh(self, loss: torch.Tensor, weight: float) -> torch.Tensor:
        return loss * weight

    def reduce(self, params: list[torch.nn.Parameter], step_loss: float, device: torch.device) -> float:
        return sum_gradients(params, step_loss)


class Fsdp(DataParallel):
    """Launched with FSDP: the weights sharded across the processes. Every rank runs every forward and backward
    (a rank without examples runs one at weight 0); FSDP sums the gradients in the backward passes; a checkpoint
    gathers the whole trainable weights and optimizer state (keyed by parameter name)."""

    sharded = True

    def share(self, examples: list[Example]) -> tuple[list[Example], float] | None:
        mine, weight = my_share(examples)
        return (mine, weight) if mine else (examples[:1], 0.0)

    def reduce(self, params: list[torch.nn.Parameter], step_loss: float, device: torch.device) -> float:
        return float(distributed.sum_across(torch.tensor([step_loss], device=device)))

    def gather(self, model: torch.nn.Module, optimizer: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        params = {n: distributed.full_tensor(p.detach()).cpu() for n, p in model.named_parameters() if p.requires_grad}
        return params, distributed.full_optimizer_state(model, optimizer)

    def restore(self, model: torch.nn.Module, optimizer: Any, params: dict[str, Any], optim: dict[str, Any]) -> None:
        distributed.load_sharded(model, optimizer, params, optim)


Strategy = Single  # the interface: Single, DataParallel and Fsdp implement it


def strategy_of(model: torch.nn.Module) -> Single:
    """The strategy of a model as it is now (sharded, launched, or one process)."""
    if distributed.is_sharded(model):
        return Fsdp()
    return DataParallel() if distributed.launched() else Single()


def strategy_for(model: torch.nn.Module, seed: int, callbacks: list[Any]) -> Single:
    """Prepare `model` for training in this process and return its strategy: launched, every rank joins (see
    `join`); under FSDP the weights are sharded (`shard`), else the model trains data parallel."""
    if distributed.launched():
        join(model, seed)
        if distributed.uses_fsdp():
            shard(model, callbacks)
    return strategy_of(model)


def _label_tokens(examples: list[Example]) -> int:
    """Tokens a causal-LM loss averages over: the shifted labels that are not -100."""
    return sum(sum(1 for t in e.labels[1:] if t != IGNORE_INDEX) for e in examples)


def my_share(examples: list[Example]) -> tuple[list[Example], float]:
    """This process's part of a micro-batch and its weight: its share of the micro-batch's label tokens.

    The loss of each part (a token mean) times its weight, summed over the processes, is the token mean of the
    whole micro-batch - the loss one process computes - so summed gradients are the one-process gradients."""
    mine = distributed.shard(examples)
    total = _label_tokens(examples)
    if total == 0:  # no shifted label at all: weigh the parts by examples
        return mine, len(mine) / len(examples)
    return mine, _label_tokens(mine) / total


def sum_gradients(params: list[torch.nn.Parameter], step_loss: float) -> float:
    """Sum the gradients (and the step's loss) over the processes, in one collective; returns the summed loss.

    A parameter that got no gradient on any process keeps `grad = None`, as in one process (AdamW skips it)."""
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        + [torch.tensor([float(p.grad is not None) for p in params] + [step_loss], device=params[0].device)]
    )
    flat = distributed.sum_across(flat)
    offset, has = 0, flat[-(len(params) + 1) : -1]
    for i, p in enumerate(params):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone() if has[i] > 0 else None
        offset += n
    return float(flat[-1])


def join(model: torch.nn.Module, seed: int) -> None:
    """Launched: wait for every rank (rank 0 has set up the run folder), give each rank its own dropout stream,
    and check that every rank starts from the same trainable weights (same seed, same init)."""
    distributed.barrier()
    if distributed.rank() > 0:
        torch.manual_seed(seed * 1_000_003 + distributed.rank())
    with torch.no_grad():
        mine = torch.stack([p.detach().double().sum() for p in model.parameters() if p.requires_grad]).cpu()
    ranks = distributed.gather(mine)
    if any(not torch.equal(r, ranks[0]) for r in ranks):
        raise BnrError("the processes start from different trainable weights; every rank must use the same seed")


def shard(model: torch.nn.Module, callbacks: list[Any]) -> bool:
    """Under FSDP: shard the model's weights across the processes (`bnr.distributed.shard_model`); returns whether
    it did. A model without frozen weights (the toy base, trained whole from scratch) stays data parallel."""
    if callbacks:
        names = ", ".join(sorted({type(cb).__name__ for cb in callbacks}))
        raise BnrError(
            f"this training uses step callbacks ({names}) that read and edit whole weights and gradients, which "
            "FSDP shards across the processes; launch without --use_fsdp (data parallel), or use another defense"
        )
    if any(getattr(m, "is_loaded_in_4bit", False) or getattr(m, "is_loaded_in_8bit", False) for m in model.modules()):
        raise BnrError(
            "FSDP cannot shard a bitsandbytes-quantised base; launch without --use_fsdp (data parallel), "
            "or use model.quantize=none"
        )
    if distributed.is_sharded(model):  # trained before, in this process
        return True
    if all(p.requires_grad for p in model.parameters()):
        log.info("FSDP: every weight of this model trains; it is trained data parallel, not sharded")
        return False
    units = distributed.shard_model(model)
    log.info("FSDP: the weights are sharded across %d processes, in %d units", distributed.world_size(), units)
    return True
