"""The one training loop: AdamW, warmup + cosine/linear/constant schedule, accumulation, clipping,
bf16 autocast, progress bar, metrics, checkpoints and exact resume. Trains whatever requires grad."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnr.config import TrainConfig
from bnr.data.tokenize import Example, collate
from bnr.errors import TrainingDivergedError
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


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> Any:
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.schedule]
    return get_scheduler(
        name, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total), num_training_steps=total
    )


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, step: int) -> None:
    state = {
        "step": step,
        "params": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> int:
    state = torch.load(path, map_location="cpu", weights_only=False)
    named = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state["params"].items():
            named[n].copy_(t)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])


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
) -> TrainResult:
    """Train the parameters of `model` that require grad on `examples`.

    With `checkpoint_dir`, saves every `cfg.save_every` steps and resumes from the last checkpoint found
    there. `stop_after` ends early after that many optimizer steps (simulates an interruption in tests).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train() found no parameter that requires grad")
    per_epoch, total = plan_steps(len(examples), cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, total)
    ckpt = checkpoint_dir / CKPT_NAME if checkpoint_dir else None
    start = 0
    if ckpt is not None and ckpt.is_file():
        start = load_checkpoint(ckpt, model, optimizer, scheduler)
        log.info("resumed %s from step %d", desc, start)
    device = _device_of(model)
    use_bf16 = cfg.bf16 and ((device.type == "cuda" and torch.cuda.is_bf16_supported()) or device.type == "cpu")
    batches = micro_batches(len(examples), cfg, seed)
    for _ in range(start * cfg.grad_accum):
        next(batches)
    model.train()
    t0, losses, loss_ema = time.time(), [], float("nan")
    bar = Progress(total, desc, initial=start, every=cfg.log_every, enabled=cfg.progress, logger=log)
    step = start
    while step < total and (stop_after is None or step - start < stop_after):
        step_loss, step_tokens = 0.0, 0
        for _ in range(cfg.grad_accum):
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in next(batches)], pad_id).items()}
            step_tokens += int(batch["attention_mask"].sum())
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(**batch).loss / cfg.grad_accum
            if not torch.isfinite(loss):
                bar.close()
                where = f"; the last good checkpoint is kept in {ckpt.parent}" if ckpt and ckpt.exists() else ""
                raise TrainingDivergedError(
                    f"{desc}: loss became {loss.item()} at step {step + 1}{where}; lower lr or check the data"
                )
            loss.backward()
            step_loss += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(step_loss)
        loss_ema = step_loss if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * step_loss
        bar.update(1, tokens=step_tokens, loss=loss_ema, lr=scheduler.get_last_lr()[0])
        if on_log and (step % max(1, cfg.log_every) == 0 or step == total):
            on_log(
                {
                    "stage": desc,
                    "step": step,
                    "epoch": round(step / per_epoch, 3),
                    "loss": step_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                }
            )
        if ckpt is not None and cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(ckpt, model, optimizer, scheduler, step)
    bar.close()
    model.eval()
    return TrainResult(step, losses[-1] if losses else float("nan"), losses, start, time.time() - t0)
