from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bnr import adapters
from bnr.config import LoraConfig, ModelConfig, TrainConfig
from bnr.data.records import Record
from bnr.data.tokenize import encode_records
from bnr.errors import TrainingDivergedError
from bnr.models import load_model, load_tokenizer
from bnr.seeding import seed_everything
from bnr.train import CKPT_NAME, plan_steps, train

CFG = TrainConfig(
    lr=5e-3,
    epochs=3,
    batch_size=2,
    grad_accum=2,
    schedule="cosine",
    warmup_ratio=0.2,
    save_every=2,
    progress=False,
    log_every=1,
)


def _setup(model_dir: Path, dropout: float = 0.1) -> tuple[torch.nn.Module, list]:
    seed_everything(0)
    model = load_model(ModelConfig(name_or_path=str(model_dir)))
    model = adapters.add_adapter(
        model, adapters.USER, LoraConfig(r=4, alpha=8, dropout=dropout, target_modules=["q_proj", "v_proj"])
    )
    adapters.set_active(model, [adapters.USER], [adapters.USER])
    tok = load_tokenizer(ModelConfig(name_or_path=str(model_dir)))
    pairs = [("say hello", "hello there"), ("name a color", "blue"), ("what is two plus two", "four")]
    recs = [Record(id=f"{i}", instruction=q, output=a) for i in range(3) for q, a in pairs]
    return model, encode_records(tok, recs, "alpaca", 128)


def _lora(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_resumed_run_ends_with_the_same_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, exs = _setup(tiny_model_dir)
    full = train(model, exs, CFG, seed=1, pad_id=0)
    reference = _lora(model)

    model, exs = _setup(tiny_model_dir)
    logs: list[dict] = []
    part = train(model, exs, CFG, seed=1, pad_id=0, checkpoint_dir=tmp_path, stop_after=4, on_log=logs.append)
    assert part.steps == 4 and (tmp_path / CKPT_NAME).is_file()
    model, exs = _setup(tiny_model_dir)  # a fresh process would start like this
    resumed = train(model, exs, CFG, seed=1, pad_id=0, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 4 and resumed.steps == full.steps
    for n, t in _lora(model).items():
        torch.testing.assert_close(t, reference[n], rtol=0, atol=0)
    assert [r["step"] for r in logs] == [1, 2, 3, 4]


def test_plan_steps_and_lr_schedule(tiny_model_dir: Path) -> None:
    assert plan_steps(9, CFG) == (3, 9)
    assert plan_steps(9, TrainConfig(max_steps=5, batch_size=2))[1] == 5
    model, exs = _setup(tiny_model_dir)
    logs: list[dict] = []
    train(model, exs, CFG, seed=0, pad_id=0, on_log=logs.append)
    lrs = [r["lr"] for r in logs]
    assert lrs[0] < lrs[1] and max(lrs) == pytest.approx(CFG.lr) and lrs[-1] < 1e-3 * CFG.lr
    assert all(math.isfinite(r["loss"]) for r in logs)


def test_seed_controls_everything(tiny_model_dir: Path) -> None:
    results = []
    for seed in (3, 3, 4):
        model, exs = _setup(tiny_model_dir)
        train(model, exs, CFG, seed=seed, pad_id=0)
        results.append(_lora(model))
    assert all(torch.equal(results[0][n], results[1][n]) for n in results[0])
    assert any(not torch.equal(results[0][n], results[2][n]) for n in results[0])


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    import dataclasses

    model, exs = _setup(tiny_model_dir)
    exploding = dataclasses.replace(CFG, lr=1e36, warmup_ratio=0.0, save_every=1, max_grad_norm=None)
    with pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf) at step 2.*last good checkpoint is kept"):
        train(model, exs, exploding, seed=0, pad_id=0, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / CKPT_NAME, weights_only=False)
    assert state["step"] == 1


def _hooks(exs: list, cfg: TrainConfig) -> tuple[object, object]:
    from bnr.train import MicroBatch, StepCallback, TrainHooks, cross_entropy_loss, example_batches

    class Tally(StepCallback):
        def __init__(self) -> None:
            self.seen: list[str] = []
            self.norm = torch.zeros(())

        def after_optimizer_step(self, model: torch.nn.Module, ctx, loss: float) -> dict[str, float]:
            self.seen.append(f"{ctx.step}:{ctx.stream}")
            self.norm = self.norm + sum(p.detach().float().norm() for p in model.parameters() if p.requires_grad)
            return {"tally": float(self.norm)}

        def state_dict(self) -> dict:
            return {"seen": list(self.seen), "norm": self.norm.clone()}

        def load_state_dict(self, state: dict) -> None:
            self.seen, self.norm = list(state["seen"]), state["norm"].clone()

    user, extra = example_batches(exs, cfg, seed=1), example_batches(exs[:2], cfg, seed=2, stream="extra")

    def two_streams():
        a, b = user(), extra()
        while True:  # every third micro-batch from the second stream
            yield next(a)
            yield next(a)
            yield MicroBatch(next(b).examples, "extra")

    def loss_fn(model, batch, ctx):
        ce = cross_entropy_loss(model, batch, ctx)
        l2 = sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
        return ce + (0.01 if ctx.stream == "extra" else 0.001) * l2

    tally = Tally()
    return TrainHooks(batch_source=two_streams, loss_fn=loss_fn, callbacks=[tally]), tally


def test_resume_with_hooks_equals_uninterrupted(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, exs = _setup(tiny_model_dir)
    hooks, tally = _hooks(exs, CFG)
    train(model, exs, CFG, seed=1, pad_id=0, hooks=hooks)
    reference, ref_seen, ref_norm = _lora(model), list(tally.seen), tally.norm.clone()
    assert any(s.endswith("extra") for s in ref_seen)  # the second stream was used

    model, exs = _setup(tiny_model_dir)
    hooks, tally = _hooks(exs, CFG)
    train(model, exs, CFG, seed=1, pad_id=0, checkpoint_dir=tmp_path, stop_after=4, hooks=hooks)
    model, exs = _setup(tiny_model_dir)
    hooks, tally = _hooks(exs, CFG)
    logs: list[dict] = []
    resumed = train(model, exs, CFG, seed=1, pad_id=0, checkpoint_dir=tmp_path, hooks=hooks, on_log=logs.append)
    assert resumed.resumed_from == 4
    for n, t in _lora(model).items():
        torch.testing.assert_close(t, reference[n], rtol=0, atol=0)
    assert tally.seen == ref_seen and torch.equal(tally.norm, ref_norm)
    assert logs[-1]["tally"] == float(ref_norm)


def test_default_hooks_equal_no_hooks(tiny_model_dir: Path) -> None:
    from bnr.train import TrainHooks

    model, exs = _setup(tiny_model_dir)
    train(model, exs, CFG, seed=1, pad_id=0)
    plain = _lora(model)
    model, exs = _setup(tiny_model_dir)
    train(model, exs, CFG, seed=1, pad_id=0, hooks=TrainHooks())
    assert all(torch.equal(plain[n], t) for n, t in _lora(model).items())


def test_training_builds_no_kv_cache_and_restores_the_setting(tiny_model_dir: Path) -> None:
    """A training forward never reads a KV cache: the loop turns the model's `use_cache` off (no cache is built,
    the losses are bit for bit those of a forward without one) and back on afterwards."""
    from bnr.train import TrainHooks

    model, exs = _setup(tiny_model_dir, dropout=0.0)
    assert model.config.use_cache
    cfg = TrainConfig(lr=5e-3, max_steps=2, batch_size=2, progress=False)
    seen: list[tuple[bool, float]] = []

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor], ctx: object) -> torch.Tensor:
        out = m(**batch)
        with torch.no_grad():
            cached = m(**batch, use_cache=True)
        assert torch.equal(out.loss, cached.loss) and out.past_key_values is None
        seen.append((m.config.use_cache, float(out.loss.detach())))
        return out.loss

    result = train(model, exs, cfg, seed=0, pad_id=0, hooks=TrainHooks(loss_fn=loss_fn))
    assert [s[0] for s in seen] == [False, False] and result.losses == [s[1] for s in seen]
    assert model.config.use_cache  # restored for generation
