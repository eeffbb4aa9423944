"""The alignment-stage defenses' provider cost: the CPU time of one provider step of each (Vaccine, Booster,
RepNoise, T-Vaccine) over a plain cross-entropy step, on the toy base, interleaved rounds, medians; and from it
each provider stage's cost over the buffer + reinforce stages at the toy preset's sizes (docs/defenses.md).

    python benchmarks/realign_steps.py [--rounds 7] [--preset toy]

A step is one micro-batch of `reinforce.train.batch_size` alignment examples (and as many harmful ones where the
defense draws them): the defense's `loss_fn` plus the loop's backward, as `bnr.train.train` runs it. Step counts:
the buffer takes ceil(buffer.n / b) x epochs steps, the ReinforceLoRA ceil((n_refusal + n_benign) / b) x epochs,
each re-alignment ceil(n / b) x epochs with `n = reinforce.n_refusal` (their defaults).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Any

import torch

DEFENSES = ("vaccine", "booster", "repnoise", "t-vaccine")


def _setup(preset: str) -> tuple[Any, Any, Any, dict[str, torch.Tensor]]:
    from bnr import adapters
    from bnr.config import load_config
    from bnr.data.tokenize import collate
    from bnr.defenses.realign import REALIGN
    from bnr.defenses.streams import encoded
    from bnr.models import load_model_and_tokenizer

    cfg = load_config(preset, [])
    model, tok = load_model_and_tokenizer(cfg.model, for_training=True)
    model = adapters.add_adapter(model, REALIGN, cfg.reinforce.lora)
    adapters.set_active(model, active=[REALIGN], trainable=[REALIGN])
    b = cfg.reinforce.train.batch_size
    batch = collate(encoded(cfg, tok, cfg.reinforce.refusal_data, b, 0, "bench"), tok.pad_token_id)
    return cfg, model, tok, batch


def _loss_fns(cfg: Any, model: Any, tok: Any) -> dict[str, Any]:
    import importlib

    from bnr.defenses.realign import resolve
    from bnr.train import cross_entropy_loss

    fns: dict[str, Any] = {"ce": (cross_entropy_loss, [])}
    for name in DEFENSES:
        module = importlib.import_module(f"bnr.defenses.{name.replace('-', '_')}")
        hooks = module._hooks(cfg, model, tok, resolve(cfg, name))
        for cb in hooks.callbacks:
            cb.on_train_start(model, 1)
        fns[name] = (hooks.loss_fn, hooks.callbacks)
    return fns


def _step_seconds(model: Any, batch: dict[str, torch.Tensor], loss_fn: Any, callbacks: list[Any]) -> float:
    from bnr.train import StepContext

    ctx = StepContext(0, 1)
    t0 = time.process_time()
    loss_fn(model, batch, ctx).backward()
    for cb in callbacks:
        cb.before_optimizer_step(model, ctx)
    model.zero_grad(set_to_none=True)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--preset", default="toy")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg, model, tok, batch = _setup(args.preset)
    model.train()
    fns = _loss_fns(cfg, model, tok)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name in fns if r % 2 else reversed(list(fns)):
            seconds = _step_seconds(model, batch, *fns[name])
            if r:
                times[name].append(seconds)
    per = {k: statistics.median(v) for k, v in times.items()}
    b = cfg.reinforce.train.batch_size

    def steps(n: int, epochs: float) -> int:
        return math.ceil(n / b) * math.ceil(epochs)

    provider = steps(cfg.buffer.n, cfg.buffer.train.epochs)
    provider += steps(cfg.reinforce.n_refusal + cfg.reinforce.n_benign, cfg.reinforce.train.epochs)
    realign = steps(cfg.reinforce.n_refusal, cfg.reinforce.train.epochs)
    print(f"preset {args.preset}: CE step {per['ce'] * 1e3:.1f} ms CPU; buffer + reinforce = {provider} CE steps")
    print("| defense | step / CE step | provider stage / (buffer + reinforce) |")
    print("|---|---:|---:|")
    for name in DEFENSES:
        ratio = per[name] / per["ce"]
        print(f"| `{name}` | {ratio:.2f}x | {realign * ratio / provider:.2f}x ({realign} steps) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
