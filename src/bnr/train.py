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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bnr import distributed
from bnr.config import TrainConfig
from bnr.data.tokenize import Example, collate
from bnr.diskfull import writing
from bnr.errors import BnrError, TrainingDivergedError
from bnr.interrupt import Interrupted, StopRequest, deferred_stop
from bnr.progress import Progress
from bnr.seeding import rng_state, set_rng_state
from bnr.strategy import Single, strategy_for, strategy_of

log = logging.getLogger(__name__)
CKPT_NAME = "last.pt"


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


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    step: int,
    callbacks: list[StepCallback] | None = None,
    strategy: Single | None = None,
) -> None:
    """Write the training state to `path` atomically. Launched, every rank calls it (their RNG states are gathered,
    so each resumes its own dropout stream) and rank 0 alone writes; the weights are the same on every rank.
    The strategy gathers the weights and optimizer state (sharded: the whole of them, keyed by parameter name)."""
    strategy = strategy or strategy_of(model)
    rngs = distributed.gather(rng_state())
    params, optim = strategy.gather(model, optimizer)
    if not distributed.is_main():
        return
    state = {
        "callbacks": [cb.state_dict() for cb in callbacks or []],
        "step": step,
        "params": params,
        "optimizer": optim,
        "scheduler": scheduler.state_dict(),
        "rng": rngs[0],
        "sharded": strategy.sharded,
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
    path: Path,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    callbacks: list[StepCallback] | None = None,
    strategy: Single | None = None,
) -> int:
    """Restore a `save_checkpoint` state; returns its step. Each rank takes its own RNG state when the checkpoint
    was made with the same number of processes (else rank 0's, so the data order stays exact)."""
    strategy = strategy or strategy_of(model)
    state = read_checkpoint(path)
    saved = state.get("callbacks", [])
    if len(saved) != len(callbacks or []):
        raise ValueError(
            f"checkpoint {path} holds {len(saved)} callback state(s), this run has {len(callbacks or [])}"
        )
    if bool(state.get("sharded", False)) != strategy.sharded:
        made, now = ("with" if state.get("sharded") else "without"), ("with" if strategy.sharded else "without")
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
    strategy.restore(model, optimizer, state["params"], state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) != distributed.world_size():
        log.warning("%s was saved by %d process(es), resumed by %d", path, len(ranks), distributed.world_size())
    set_rng_state(ranks[distributed.rank()] if len(ranks) == distributed.world_size() else ranks[0])
    return int(state["step"])


def _check_finite(loss: float, desc: str, step: int, ckpt: Path | None, bar: Progress) -> None:
    if not math.isfinite(loss):
        bar.close()
        where = f"; the last good checkpoint is kept in {ckpt.parent}" if ckpt and ckpt.exists() else ""
        raise TrainingDivergedError(
            f"{desc}: loss became {loss} at step {step + 1}{where}; lower lr or check the data"
        )


def _interrupted(step: int, desc: str, stop: StopRequest, ckpt: Path | None) -> Interrupted:
    """What ends a run that a stop signal reached during the step just done (checkpointed when `ckpt` is set)."""
    if ckpt is None:
        return Interrupted(f"{stop.signal_name} during {desc} at step {step}; nothing was saved")
    return Interrupted(
        f"{stop.signal_name} during {desc}: checkpoint of step {step} saved in {ckpt.parent}; "
        "rerun the same command with resume=true to continue"
    )


def _begin(model: torch.nn.Module, callbacks: list[StepCallback], total: int) -> bool | None:
    """Tell the callbacks training starts, put the model in training mode and pause its KV cache (the setting to
    restore is returned)."""
    for cb in callbacks:
        cb.on_train_start(model, total)
    model.train()
    return _pause_kv_cache(model)


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

    Launched on several processes (`bnr.distributed`), a distribution strategy (`bnr.strategy`: data parallel or
    FSDP) splits each micro-batch across them and reduces the gradients weighted by label tokens, so the same config
    takes the same steps on any number of processes; rank 0 alone logs and writes checkpoints.

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
    """The loop of `train`: set up (strategy, optimizer, schedule, resume, batch stream), then one optimizer step
    at a time (`_Run.step`), logging, checkpointing and stopping on a signal after a finished step."""
    hooks = hooks or TrainHooks()
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("train() found no parameter that requires grad")
    strategy = strategy_for(model, seed, hooks.callbacks)
    params = [p for p in model.parameters() if p.requires_grad]  # after sharding: FSDP made new parameters
    per_epoch, total = plan_steps(len(examples), cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, total)
    ckpt = checkpoint_dir / CKPT_NAME if checkpoint_dir else None
    start = _resume(ckpt, model, optimizer, scheduler, hooks.callbacks, strategy)
    if start:
        log.info("resumed %s from step %d", desc, start)
    batches = _batches_from(start, hooks.batch_source or example_batches(examples, cfg, seed), cfg)
    kv_cache = _begin(model, hooks.callbacks, total)
    main = distributed.is_main()
    bar = Progress(total, desc, initial=start, every=cfg.log_every, enabled=cfg.progress and main, logger=log)
    device = _device_of(model)
    run = _Run(model, cfg, hooks, strategy, params, optimizer, scheduler, batches, pad_id, device, desc, ckpt, bar)
    t0, losses, loss_ema, step = time.time(), [], float("nan"), start
    while step < total and (stop_after is None or step - start < stop_after):
        record = run.step(step, total)
        step += 1
        losses.append(record["loss"])
        loss_ema = record["loss"] if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * record["loss"]
        bar.update(1, tokens=run.tokens, loss=loss_ema, lr=record["lr"])
        if on_log and main and (step % max(1, cfg.log_every) == 0 or step == total):
            on_log({"stage": desc, "step": step, "epoch": round(step / per_epoch, 3), **record})
        if ckpt is not None and cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(ckpt, model, optimizer, scheduler, step, hooks.callbacks, strategy)
        if stop.requested and step < total:
            bar.close()
            if ckpt is not None:
                save_checkpoint(ckpt, model, optimizer, scheduler, step, hooks.callbacks, strategy)
            raise _interrupted(step, desc, stop, ckpt)
    bar.close()
    model.eval()
    _resume_kv_cache(model, kv_cache)
    return TrainResult(step, losses[-1] if losses else float("nan"), losses, start, time.time() - t0)


def _resume(
    ckpt: Path | None, model: torch.nn.Module, optimizer: Any, scheduler: Any, callbacks: list[Any], strategy: Single
) -> int:
    """The step to start from: the checkpoint's, restored, when there is one; else 0."""
    if ckpt is None or not ckpt.is_file():
        return 0
    return load_checkpoint(ckpt, model, optimizer, scheduler, callbacks, strategy)


def _batches_from(start: int, source: BatchSource, cfg: TrainConfig) -> Iterator[MicroBatch]:
    """The micro-batch stream from optimizer step `start` on (replayed up to it, so a resume is exact)."""
    batches = source()
    for _ in range(start * cfg.grad_accum):
        next(batches)
    return batches


def bf16_autocast(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the loop runs on `device` under bf16 autocast: `cfg.bf16` on the CPU or a GPU that supports it."""
    return cfg.bf16 and ((device.type == "cuda" and torch.cuda.is_bf16_supported()) or device.type == "cpu")


@dataclass
class _Run:
    """One training run's state, and one optimizer step of it: the micro-batches' forward and backward passes
    (each process its share, per the strategy), the reduction, clipping, callbacks and the optimizer step."""

    model: torch.nn.Module
    cfg: TrainConfig
    hooks: TrainHooks
    strategy: Single
    params: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    batches: Iterator[MicroBatch]
    pad_id: int
    device: torch.device
    desc: str
    ckpt: Path | None
    bar: Progress
    tokens: int = 0

    def step(self, step: int, total: int) -> dict[str, Any]:
        """Optimizer step `step`; returns its log record (loss, lr, grad_norm and the callbacks' extras)."""
        loss, ctx = self._accumulate(step, total)
        if self.strategy.launched:
            _check_finite(loss, self.desc, step, self.ckpt, self.bar)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm or float("inf"))
        grad_norm = distributed.full_tensor(grad_norm)  # sharded: on every rank (a collective), not only rank 0
        done = StepContext(step, total, self.cfg.grad_accum - 1, ctx.stream)
        for cb in self.hooks.callbacks:
            cb.before_optimizer_step(self.model, done)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        extra: dict[str, float] = {}
        for cb in self.hooks.callbacks:
            extra.update(cb.after_optimizer_step(self.model, done, loss) or {})
        lr = self.scheduler.get_last_lr()[0]
        return {"loss": loss, "lr": lr, "grad_norm": float(grad_norm), **extra}

    def _accumulate(self, step: int, total: int) -> tuple[float, StepContext]:
        """Forward and backward over the step's micro-batches; returns the step's (reduced) loss."""
        loss_fn = self.hooks.loss_fn or cross_entropy_loss
        use_bf16 = bf16_autocast(self.cfg, self.device)
        step_loss, self.tokens = 0.0, 0
        for micro in range(self.cfg.grad_accum):
            mb = next(self.batches)
            ctx = StepContext(step, total, micro, mb.stream)
            self.tokens += sum(len(e.input_ids) for e in mb.examples)
            share = self.strategy.share(mb.examples)
            if share is None:
                continue
            batch = {k: v.to(self.device) for k, v in collate(share[0], self.pad_id).items()}
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = self.strategy.weigh(loss_fn(self.model, batch, ctx) / self.cfg.grad_accum, share[1])
            if not self.strategy.launched:
                _check_finite(loss.item(), self.desc, step, self.ckpt, self.bar)
            loss.backward()
            step_loss += loss.item()
        return self.strategy.reduce(self.params, step_loss, self.device), ctx
