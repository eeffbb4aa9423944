"""The one training loop: AdamW, warmup + cosine/linear/constant schedule, accumulation, clipping,
bf16 autocast, progress bar, metrics, checkpoints and exact resume. Trains whatever requires grad.

Seams for defenses (`TrainHooks`), instead of flags: a batch source (which micro-batches, from which stream),
a loss function (what is minimised on one micro-batch) and step callbacks (before / after each optimizer
step). Resume stays exact: a batch source is a deterministic stream that the loop replays up to the resumed
step, and callbacks with state put it into the checkpoint (`state_dict` / `load_state_dict`).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnr import distributed
from bnr.config import TrainConfig
from bnr.data.tokenize import IGNORE_INDEX, Example, collate
from bnr.diskfull import writing
from bnr.errors import BnrError, TrainingDivergedError
from bnr.interrupt import Interrupted, StopRequest, deferred_stop
from bnr.progress import Progress

log = logging.getLogger(__name__)
CKPT_NAME = "last.pt"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch from the run's one seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    wall_time_s: float = 0.0


def plan_steps(n_examples: int, cfg: TrainConfig) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    per_epoch = max(1, math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum)))
    total = cfg.max_steps if cfg.max_steps else max(1, math.ceil(cfg.epochs * per_epoch))
    return per_epoch, total


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def micro_batches(n: int, cfg: TrainConfig, seed: int) -> Any:
    """Endless stream of index lists: each epoch is a seeded permutation cut into micro-batches."""
    epoch = 0
    while True:
        order = epoch_order(n, seed, epoch)
        for i in range(0, n, cfg.batch_size):
            yield order[i : i + cfg.batch_size]
        epoch += 1


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch: its examples and the name of the stream they come from (`user` unless a hook adds one)."""

    examples: list[Example]
    stream: str = "user"


@dataclass(frozen=True)
class StepContext:
    """Where the loop is: `step` = optimizer steps already done (0-based index of the step being built),
    `total` = planned steps, `micro` = index of the micro-batch within the step, `stream` = its stream."""

    step: int
    total: int
    micro: int = 0
    stream: str = "user"


BatchSource = Callable[[], Iterator[MicroBatch]]
"""A fresh, deterministic, endless stream of micro-batches on each call (replayed on resume)."""

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor], StepContext], torch.Tensor]
"""(model, collated batch on the model's device, context) -> scalar loss of that micro-batch."""


class StepCallback:
    """Called around every optimizer step; subclass and override what you need (all no-ops here).

    A callback that keeps state across steps returns it from `state_dict` (tensors and plain values); it is
    saved in the training checkpoint and given back through `load_state_dict` on resume.
    """

    def on_train_start(self, model: torch.nn.Module, total: int) -> None:
        """Once, before the first step (also after a resume)."""

    def before_optimizer_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        """Gradients of the step are accumulated and clipped; edit them here (projection, masking)."""

    def after_optimizer_step(self, model: torch.nn.Module, ctx: StepContext, loss: float) -> dict[str, float] | None:
        """After the update (`ctx.step` is the step just done, 0-based); returned numbers join the metrics."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


def cross_entropy_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
    """The default loss: the model's own masked next-token cross-entropy (prompt tokens are -100)."""
    return model(**batch).loss


def example_batches(examples: list[Example], cfg: TrainConfig, seed: int, stream: str = "user") -> BatchSource:
    """The default batch source: each epoch a seeded permutation of `examples`, cut into micro-batches."""

    def source() -> Iterator[MicroBatch]:
        for idx in micro_batches(len(examples), cfg, seed):
            yield MicroBatch([examples[i] for i in idx], stream)

    return source


@dataclass
class TrainHooks:
    """What a defense may change in the loop. `None` means the default (the examples, cross-entropy)."""

    batch_source: BatchSource | None = None
    loss_fn: LossFn | None = None
    callbacks: list[StepCallback] = field(default_factory=list)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> Any:
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.schedule]
    return get_scheduler(
        name, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total), num_training_steps=total
    )


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _rng_state() -> dict[str, Any]:
    """The RNG states as tensors and plain values only (what `torch.load(weights_only=True)` reads back)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    keys_t = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(words), gauss]}
    state["numpy"] = [kind, keys_t, int(pos), int(has_gauss), float(cached)]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    step: int,
    callbacks: list[StepCallback] | None = None,
) -> None:
    """Write the training state to `path` atomically. Launched, every rank calls it (their RNG states are gathered,
    so each resumes its own dropout stream) and rank 0 alone writes; the weights are the same on every rank.
    Sharded (FSDP), the whole trainable weights and optimizer state (keyed by parameter name) are gathered first."""
    rngs = distributed.gather(_rng_state())
    sharded = distributed.is_sharded(model)
    params = {n: distributed.full_tensor(p.detach()).cpu() for n, p in model.named_parameters() if p.requires_grad}
    optim = distributed.full_optimizer_state(model, optimizer) if sharded else optimizer.state_dict()
    if not distributed.is_main():
        return
    state = {
        "callbacks": [cb.state_dict() for cb in callbacks or []],
        "step": step,
        "params": params,
        "optimizer": optim,
        "scheduler": scheduler.state_dict(),
        "rng": rngs[0],
        "sharded": sharded,
    }
    if len(rngs) > 1:
        state["rng_ranks"] = rngs
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        with writing(path), open(tmp, "wb") as f:  # a file object: a full disk then surfaces as an OSError
            torch.save(state, f)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


CHECKPOINT_KEYS = ("step", "params", "optimizer", "scheduler", "rng")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state `save_checkpoint` wrote, read with `weights_only=True` (tensors and plain values: a planted pickle
    never runs code). A corrupt, truncated or foreign file is a one-line `BnrError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "it holds Python objects other than tensors and plain values; not loaded"
        raise BnrError(f"checkpoint {str(path)!r} is unreadable ({reason}); rerun without resume=true") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for a truncated or corrupt file
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise BnrError(f"checkpoint {str(path)!r} is unreadable ({reason}); rerun without resume=true") from None
    if not isinstance(state, dict):
        raise BnrError(
            f"checkpoint {str(path)!r} is unreadable (not a bnr training checkpoint); rerun without resume=true"
        )
    return state


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, callbacks: list[StepCallback] | None = None
) -> int:
    """Restore a `save_checkpoint` state; returns its step. Each rank takes its own RNG state when the checkpoint
    was made with the same number of processes (else rank 0's, so the data order stays exact)."""
    state = read_checkpoint(path)
    saved = state.get("callbacks", [])
    if len(saved) != len(callbacks or []):
        raise ValueError(
            f"checkpoint {path} holds {len(saved)} callback state(s), this run has {len(callbacks or [])}"
        )
    sharded = distributed.is_sharded(model)
    if bool(state.get("sharded", False)) != sharded:
        made, now = ("with" if state.get("sharded") else "without"), ("with" if sharded else "without")
        raise BnrError(
            f"cannot resume from {path}: it was saved {made} FSDP and this run is {now} it; "
            "resume the way it was launched, or rerun without resume=true to start over"
        )
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise BnrError(
            f"checkpoint {str(path)!r} is unreadable (not a bnr training checkpoint: no {missing[0]!r}); "
            "rerun without resume=true"
        )
    for cb, cb_state in zip(callbacks or [], saved):
        cb.load_state_dict(cb_state)
    if sharded:
        distributed.load_sharded(model, optimizer, state["params"], state["optimizer"])
    else:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in state["params"].items():
                named[n].copy_(t)
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) != distributed.world_size():
        log.warning("%s was saved by %d process(es), resumed by %d", path, len(ranks), distributed.world_size())
    _set_rng_state(ranks[distributed.rank()] if len(ranks) == distributed.world_size() else ranks[0])
    return int(state["step"])


def _label_tokens(examples: list[Example]) -> int:
    """Tokens a causal-LM loss averages over: the shifted labels that are not -100."""
    return sum(sum(1 for t in e.labels[1:] if t != IGNORE_INDEX) for e in examples)


def _my_share(examples: list[Example]) -> tuple[list[Example], float]:
    """This process's part of a micro-batch and its weight: its share of the micro-batch's label tokens.

    The loss of each part (a token mean) times its weight, summed over the processes, is the token mean of the
    whole micro-batch - the loss one process computes - so summed gradients are the one-process gradients."""
    mine = distributed.shard(examples)
    total = _label_tokens(examples)
    if total == 0:  # no shifted label at all: weigh the parts by examples
        return mine, len(mine) / len(examples)
    return mine, _label_tokens(mine) / total


def _sum_gradients(params: list[torch.nn.Parameter], step_loss: float) -> float:
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


def _check_finite(loss: float, desc: str, step: int, ckpt: Path | None, bar: Progress) -> None:
    if not math.isfinite(loss):
        bar.close()
        where = f"; the last good checkpoint is kept in {ckpt.parent}" if ckpt and ckpt.exists() else ""
        raise TrainingDivergedError(
            f"{desc}: loss became {loss} at step {step + 1}{where}; lower lr or check the data"
        )


def _pause_kv_cache(model: torch.nn.Module) -> bool | None:
    """Turn off the model's KV cache for training (a training forward never reads it, but a transformers model
    whose config says `use_cache` builds one anyway, copying every layer's keys and values; the loss and the
    gradients are bit for bit the same without it). Returns the setting to restore."""
    config = getattr(model, "config", None)
    saved = getattr(config, "use_cache", None)
    if saved:
        config.use_cache = False  # type: ignore[union-attr]
    return saved


def _resume_kv_cache(model: torch.nn.Module, saved: bool | None) -> None:
    if saved:
        model.config.use_cache = saved  # type: ignore[union-attr]


def _interrupted(step: int, desc: str, stop: StopRequest, ckpt: Path | None) -> Interrupted:
    """What ends a run that a stop signal reached during the step just done (checkpointed when `ckpt` is set)."""
    if ckpt is None:
        return Interrupted(f"{stop.signal_name} during {desc} at step {step}; nothing was saved")
    return Interrupted(
        f"{stop.signal_name} during {desc}: checkpoint of step {step} saved in {ckpt.parent}; "
        "rerun the same command with resume=true to continue"
    )


def train(
    model: torch.nn.Module,
    examples: list[Example],
    cfg: TrainConfig,
    *,
    seed: int,
    pad_id: int,
    checkpoint_dir: Path | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    desc: str = "train",
    stop_after: int | None = None,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Train the parameters of `model` that require grad on `examples`.

    With `checkpoint_dir`, saves every `cfg.save_every` steps and resumes from the last checkpoint found
    there. `stop_after` ends early after that many optimizer steps (simulates an interruption in tests).
    `hooks` replace the batch source and loss and add step callbacks; the planned number of steps is always
    that of `examples` (a second stream adds batches, not epochs).

    Launched on several processes (`bnr.distributed`), each micro-batch of `cfg.batch_size` examples is split
    across them and the gradients are summed, weighted by label tokens: the same config takes the same steps
    on any number of processes (equal up to float summation order; dropout masks differ). Rank 0 alone logs
    and writes checkpoints. Under FSDP (`accelerate launch --use_fsdp --fsdp_version 2`) the model is sharded
    in place before the optimizer is built and stays sharded afterwards (`bnr.adapters.save_adapter` gathers the
    adapter it saves); step callbacks are refused there.

    SIGINT or SIGTERM (one process) ends the run after the current step with a checkpoint (`bnr.interrupt`).
    """
    with deferred_stop(enabled=not distributed.launched()) as stop:
        return _train(model, examples, cfg, seed, pad_id, checkpoint_dir, on_log, desc, stop_after, hooks, stop)


def _train(
    model: torch.nn.Module,
    examples: list[Example],
    cfg: TrainConfig,
    seed: int,
    pad_id: int,
    checkpoint_dir: Path | None,
    on_log: Callable[[dict[str, Any]], None] | None,
    desc: str,
    stop_after: int | None,
    hooks: TrainHooks | None,
    stop: StopRequest,
) -> TrainResult:
    hooks = hooks or TrainHooks()
    loss_fn = hooks.loss_fn or cross_entropy_loss
    callbacks = hooks.callbacks
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train() found no parameter that requires grad")
    launched, main = distributed.launched(), distributed.is_main()
    if launched:
        _join(model, seed)
        if distributed.uses_fsdp() and _shard(model, callbacks):
            params = [p for p in model.parameters() if p.requires_grad]  # FSDP made new (sharded) parameters
    sharded = distributed.is_sharded(model)
    per_epoch, total = plan_steps(len(examples), cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, total)
    ckpt = checkpoint_dir / CKPT_NAME if checkpoint_dir else None
    start = 0
    if ckpt is not None and ckpt.is_file():
        start = load_checkpoint(ckpt, model, optimizer, scheduler, callbacks)
        log.info("resumed %s from step %d", desc, start)
    device = _device_of(model)
    use_bf16 = cfg.bf16 and ((device.type == "cuda" and torch.cuda.is_bf16_supported()) or device.type == "cpu")
    batches = (hooks.batch_source or example_batches(examples, cfg, seed))()
    for _ in range(start * cfg.grad_accum):
        next(batches)
    for cb in callbacks:
        cb.on_train_start(model, total)
    model.train()
    kv_cache = _pause_kv_cache(model)
    t0, losses, loss_ema = time.time(), [], float("nan")
    bar = Progress(total, desc, initial=start, every=cfg.log_every, enabled=cfg.progress and main, logger=log)
    step = start
    while step < total and (stop_after is None or step - start < stop_after):
        step_loss, step_tokens = 0.0, 0
        for micro in range(cfg.grad_accum):
            mb = next(batches)
            ctx = StepContext(step, total, micro, mb.stream)
            step_tokens += sum(len(e.input_ids) for e in mb.examples)
            mine, weight = _my_share(mb.examples) if launched else (mb.examples, 1.0)
            if not mine:  # a short micro-batch: this rank has no example of it
                if not sharded:
                    continue
                mine, weight = mb.examples[:1], 0.0  # FSDP: every rank runs every forward and backward
            batch = {k: v.to(device) for k, v in collate(mine, pad_id).items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(model, batch, ctx) / cfg.grad_accum
                if launched:
                    loss = loss * weight
            if not launched:
                _check_finite(loss.item(), desc, step, ckpt, bar)
            loss.backward()
            step_loss += loss.item()
        if sharded:  # FSDP has summed the gradients in the backward passes
            step_loss = float(distributed.sum_across(torch.tensor([step_loss], device=device)))
        elif launched:
            step_loss = _sum_gradients(params, step_loss)
        if launched:
            _check_finite(step_loss, desc, step, ckpt, bar)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        grad_norm = distributed.full_tensor(grad_norm)  # sharded: on every rank (a collective), not only rank 0
        done = StepContext(step, total, cfg.grad_accum - 1, ctx.stream)
        for cb in callbacks:
            cb.before_optimizer_step(model, done)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        extra: dict[str, float] = {}
        for cb in callbacks:
            extra.update(cb.after_optimizer_step(model, done, step_loss) or {})
        step += 1
        losses.append(step_loss)
        loss_ema = step_loss if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * step_loss
        bar.update(1, tokens=step_tokens, loss=loss_ema, lr=scheduler.get_last_lr()[0])
        if on_log and main and (step % max(1, cfg.log_every) == 0 or step == total):
            on_log(
                {
                    "stage": desc,
                    "step": step,
                    "epoch": round(step / per_epoch, 3),
                    "loss": step_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    **extra,
                }
            )
        if ckpt is not None and cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(ckpt, model, optimizer, scheduler, step, callbacks)
        if stop.requested and step < total:
            bar.close()
            if ckpt is not None:
                save_checkpoint(ckpt, model, optimizer, scheduler, step, callbacks)
            raise _interrupted(step, desc, stop, ckpt)
    bar.close()
    model.eval()
    _resume_kv_cache(model, kv_cache)
    return TrainResult(step, losses[-1] if losses else float("nan"), losses, start, time.time() - t0)


def _join(model: torch.nn.Module, seed: int) -> None:
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


def _shard(model: torch.nn.Module, callbacks: list[StepCallback]) -> bool:
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
