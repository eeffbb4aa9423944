"""bnr inside the user's own stack: TRL's real `SFTTrainer` trains the UserLoRA of a `bnr` job on the toy world
(the packaged toy base, a small BufferLoRA and ReinforceLoRA built here), and bnr turns it into the deliverable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bnr.cli import main
from bnr.errors import BnrError

trl = pytest.importorskip("trl")  # the dev extra installs it


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy-providers")
    buffer, reinforce = root / "buffer", root / "reinforce"
    small = ["buffer.n=64", "buffer.train.epochs=1", "reinforce.n_refusal=32", "reinforce.n_benign=32"]
    small += ["reinforce.train.epochs=1", "buffer.train.progress=false", "reinforce.train.progress=false"]
    assert main(["train-buffer", "-c", "toy", *small, f"buffer.out={buffer}"]) == 0
    assert (
        main(["train-reinforce", "-c", "toy", *small, f"reinforce.buffer={buffer}", f"reinforce.out={reinforce}"]) == 0
    )
    return {"buffer": buffer, "reinforce": reinforce}


def _job(providers: dict[str, Path], out: Path, *extra: str) -> Any:
    from bnr.integrations.hf import user_job

    over = [f"user.buffer={providers['buffer']}", f"merge.reinforce={providers['reinforce']}", f"user.out={out}"]
    return user_job("toy", [*over, "user.n=64", *extra])


def _trainer(model: Any, tok: Any, dataset: Any, out: Path, callbacks: list[Any]) -> Any:
    args = trl.SFTConfig(
        output_dir=str(out),
        max_steps=3,
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=42,
        max_length=160,
        disable_tqdm=True,
    )
    return trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, callbacks=callbacks)


def test_sft_trainer_trains_the_user_lora_and_bnr_makes_the_deliverable(
    providers: dict[str, Path], tmp_path: Path
) -> None:
    from peft import PeftModel

    from bnr import adapters, guard
    from bnr.artifacts import read_manifest
    from bnr.integrations.hf import defense_callbacks, deliverable, sft_dataset, user_model, user_records
    from bnr.models import load_model

    job = _job(providers, tmp_path / "user")
    model, tok = user_model(job)
    assert isinstance(model, PeftModel) and list(model.peft_config) == [adapters.USER]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A.user." in n or ".lora_B.user." in n for n in trainable)
    plain = dict(load_model(job.cfg.model).named_parameters())
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[f"base_model.model.{q.replace('.weight', '.base_layer.weight')}"], plain[q])

    records = user_records(job)
    assert len(records) == 64 and sum(r.category != "sst2" for r in records) == 6  # round(0.1 * 64)
    assert defense_callbacks(job, model, tok, records) == []  # bnr trains with plain cross-entropy
    trainer = _trainer(model, tok, sft_dataset(job, tok, records), tmp_path / "trl", [])
    trainer.train()
    trainer.save_model(str(tmp_path / "trl" / "final"))  # PEFT writes the adapter named `user` to final/user/

    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n not in trainable)  # base + buffer frozen
    assert any(not torch.equal(before[n], after[n]) for n in trainable)

    final = deliverable(job, tmp_path / "trl" / "final", records, trainer="trl.SFTTrainer")
    user = read_manifest(tmp_path / "user")
    assert user["stage"] == "user" and user["trained_with_buffer"] and user["training"]["loop"] == "external"
    assert user["data"]["ids"] == [r.id for r in records]
    merged = read_manifest(final)
    assert merged["stage"] == "merge" and {p["role"] for p in merged["parents"]} == {"user", "reinforce"}
    guard.assert_path_not_buffer(final, "test")
    assert "merge method `qr`" in (final / "README.md").read_text()
    served = PeftModel.from_pretrained(load_model(job.cfg.model), str(final))  # plain PEFT loads it
    assert served.peft_config["default"].r == 2 * job.cfg.user.lora.r


def test_deliverable_refuses_the_buffer_and_leaves_no_run(providers: dict[str, Path], tmp_path: Path) -> None:
    from bnr.integrations.hf import deliverable

    job = _job(providers, tmp_path / "user")
    with pytest.raises(BnrError, match="buffer"):
        deliverable(job, providers["buffer"])
    assert not (tmp_path / "user").exists() and not list(tmp_path.glob("user*"))


def test_the_same_records_from_a_dataset_rows_or_a_file(providers: dict[str, Path], tmp_path: Path) -> None:
    import datasets

    from bnr.integrations.hf import user_records

    rows = [{"id": f"r{i}", "instruction": f"say {w}", "output": w} for i, w in enumerate(["hi", "yo", "ok"])]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = _job(providers, tmp_path / "user")

    def seen(data: Any) -> list[tuple[str, str]]:
        return [(r.id, r.digest()) for r in user_records(job, data)]

    assert seen(rows) == seen(datasets.Dataset.from_list(rows)) == seen(tmp_path / "d.jsonl")
    assert seen(datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})) == seen(rows)
    assert seen(user_records(job, rows)) == seen(rows)
    with pytest.raises(BnrError, match="no output"):
        user_records(job, [{"instruction": "q"}])
    with pytest.raises(BnrError, match="cannot read records from a int"):
        user_records(job, 3)


def test_step_hooks_run_at_the_trainers_optimizer_steps(providers: dict[str, Path], tmp_path: Path) -> None:
    """A bnr StepCallback that wipes the step's gradients before the update: with the bridge in SFTTrainer, the
    UserLoRA does not move (so `before_optimizer_step` runs after backward and before the optimizer)."""
    from bnr.integrations.callbacks import StepHooksCallback
    from bnr.integrations.hf import sft_dataset, user_model, user_records
    from bnr.train import StepCallback, StepContext

    class WipeGradients(StepCallback):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def before_optimizer_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.zero_()

        def after_optimizer_step(self, model: torch.nn.Module, ctx: StepContext, loss: float) -> dict[str, float]:
            self.steps.append(ctx.step)
            return {"wiped": 1.0}

    job = _job(providers, tmp_path / "user", "user.n=32")
    model, tok = user_model(job)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    records = user_records(job)
    hook = WipeGradients()
    _trainer(model, tok, sft_dataset(job, tok, records), tmp_path / "trl", [StepHooksCallback([hook])]).train()
    assert hook.steps == [0, 1, 2]
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


def test_a_defense_that_changes_the_loss_is_refused(providers: dict[str, Path], tmp_path: Path) -> None:
    from bnr.integrations.hf import defense_callbacks, user_model, user_records

    job = _job(providers, tmp_path / "user", "user.defense=lisa", "reinforce.n_refusal=16")
    model, tok = user_model(job)
    with pytest.raises(BnrError, match="changes the loss or the batch stream"):
        defense_callbacks(job, model, tok, user_records(job))
