"""Lisa: the two streams alternate in exactly the configured proportion, the proximal term pulls towards the
other state's checkpoint, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from e2e import prepared, through_pipeline, through_sweep

from bnr.artifacts import read_manifest
from bnr.cli import main
from conftest import tiny_overrides

FAST = ("defenses.lisa.alignment_steps=1", "defenses.lisa.finetune_steps=2", "user.train.epochs=3")


def test_phase_follows_the_proportion() -> None:
    from bnr.defenses.lisa import ALIGN, LisaOptions, phase

    opts = LisaOptions(alignment_steps=2, finetune_steps=3)
    assert [phase(opts, s) == ALIGN for s in range(10)] == [True, True, False, False, False] * 2
    assert sum(phase(LisaOptions(), s) == ALIGN for s in range(1000)) == 100  # released 10 : 90


def test_streams_alternate_in_the_configured_proportion(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from bnr.train import plan_steps

    job, model, tok, examples = prepared(tiny_model_dir, tiny_data, tmp_path, "lisa", *FAST, "user.train.grad_accum=2")
    hooks = job.defense.training_hooks(job, model, tok, examples)
    _, total = plan_steps(len(examples), job.cfg.user.train)
    stream = hooks.batch_source()
    seen = [next(stream) for _ in range(total * 2)]
    streams = [mb.stream for mb in seen]
    assert streams == (["alignment"] * 2 + ["user"] * 4) * (total // 3)
    assert all(e.id.startswith("r-") for mb in seen if mb.stream == "alignment" for e in mb.examples)
    assert all(not e.id.startswith("r-") for mb in seen if mb.stream == "user" for e in mb.examples)


def test_finetune_logs_each_phase(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    assert main(["finetune", *over, "user.defense=lisa", f"user.out={tmp_path / 'user'}", *FAST]) == 0
    logs = [json.loads(x) for x in (tmp_path / "user" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lisa_alignment"] for r in logs] == [1.0, 0.0, 0.0] * 3
    m = read_manifest(tmp_path / "user")
    assert m["defense"] == "lisa" and m["defense_notes"]["alignment_records"] == 12 and m["training"]["steps"] == 9


def test_proximal_term_is_rho_half_squared_distance(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from bnr.data.tokenize import collate
    from bnr.train import StepContext, cross_entropy_loss

    job, model, tok, examples = prepared(tiny_model_dir, tiny_data, tmp_path, "lisa", "defenses.lisa.rho=4")
    hooks = job.defense.training_hooks(job, model, tok, examples)
    hooks.callbacks[0].on_train_start(model, 10)
    model.eval()  # no dropout: the same cross-entropy on every call
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.5)
    batch = collate(examples[:4], tok.pad_token_id)
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ce = cross_entropy_loss(model, batch, StepContext(5, 10))
    expected = ce + 4 / 2 * 0.25 * numel
    torch.testing.assert_close(hooks.loss_fn(model, batch, StepContext(5, 10, 0, "user")), expected, rtol=1e-5, atol=0)
    assert torch.equal(hooks.loss_fn(model, batch, StepContext(1, 10, 0, "user")), ce)  # first 10%: no term


def test_resume_equals_uninterrupted(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from bnr.seeding import seed_everything
    from bnr.train import train

    def run(stop: int | None, ckpt: Path | None) -> tuple[dict[str, torch.Tensor], dict]:
        seed_everything(0)
        extra = (*FAST, "defenses.lisa.proximal_after=0", "user.train.save_every=1")
        job, model, tok, examples = prepared(tiny_model_dir, tiny_data, tmp_path / "cfg", "lisa", *extra)
        hooks = job.defense.training_hooks(job, model, tok, examples)
        cfg = job.cfg.user.train
        train(model, examples, cfg, seed=0, pad_id=tok.pad_token_id, checkpoint_dir=ckpt, stop_after=stop, hooks=hooks)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, hooks.callbacks[
            0
        ].weights

    full, full_ckpts = run(None, None)
    run(4, tmp_path / "ckpt")  # stops inside the second cycle, after a phase change
    resumed, resumed_ckpts = run(None, tmp_path / "ckpt")
    assert all(torch.equal(full[n], resumed[n]) for n in full)
    for state in ("alignment", "user"):
        assert all(torch.equal(full_ckpts[state][n], resumed_ckpts[state][n]) for n in full)


def test_lisa_through_pipeline_and_sweep(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    assert through_pipeline(tiny_model_dir, tiny_data, tmp_path / "p", "lisa", *FAST) == tmp_path / "p" / "user"
    through_sweep(tiny_model_dir, tiny_data, tmp_path, "lisa", *FAST)


@pytest.mark.parametrize(
    "bad", ["defenses.lisa.finetune_steps=0", "defenses.lisa.rho=-1", "defenses.lisa.align_step=3"]
)
def test_bad_options_are_one_line_errors(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["finetune", *tiny_overrides(tiny_model_dir, tiny_data, tmp_path), "user.defense=lisa", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bnr: error:") and "defenses.lisa" in err[0]
