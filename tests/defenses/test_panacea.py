"""Panacea: strength 0 is SFT, the deliverable is the UserLoRA plus the saved perturbation of norm rho."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from e2e import adapter_tensors, prepared, through_pipeline, through_sweep

from bnr.artifacts import read_manifest
from bnr.cli import main
from conftest import tiny_overrides


def _finetune(model_dir: Path, data: dict[str, Path], out: Path, defense: str, *extra: str) -> tuple[Path, Path]:
    over = tiny_overrides(model_dir, data, out)
    argv = [*over, f"user.defense={defense}", f"user.out={out / 'user'}", f"user.final_out={out / 'final'}", *extra]
    assert main(["finetune", *argv]) == 0
    return out / "user", out / "final"


def test_strength_zero_equals_sft(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    sft_user, _ = _finetune(tiny_model_dir, tiny_data, tmp_path / "sft", "sft")
    user, final = _finetune(tiny_model_dir, tiny_data, tmp_path / "pan", "panacea", "defenses.panacea.rho=0")
    sft, trained, delivered = adapter_tensors(sft_user), adapter_tensors(user), adapter_tensors(final)
    assert sft.keys() == trained.keys() == delivered.keys()
    assert all(torch.equal(sft[k], trained[k]) and torch.equal(sft[k], delivered[k]) for k in sft)
    assert (final / "adapter_config.json").read_text() == (user / "adapter_config.json").read_text()


def test_deliverable_is_user_lora_plus_eps_of_norm_rho(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file

    from bnr.config import ModelConfig
    from bnr.models import load_model_and_tokenizer

    user, final = _finetune(tiny_model_dir, tiny_data, tmp_path, "panacea", "defenses.panacea.rho=0.5")
    trained, delivered = adapter_tensors(user), adapter_tensors(final)
    eps = load_file(str(user / "panacea_perturbation.safetensors"))
    assert eps.keys() == trained.keys()
    norm = torch.sqrt(sum((t.double() ** 2).sum() for t in eps.values()))
    assert abs(float(norm) - 0.5) < 1e-4
    assert all(torch.equal(delivered[k], trained[k] + eps[k]) for k in trained)
    m = read_manifest(final)
    assert m["stage"] == "panacea" and [p["role"] for p in m["parents"]] == ["user"] and not m["contains_buffer"]
    assert read_manifest(user)["defense_notes"]["harmful_records"] == 12
    base, _ = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    PeftModel.from_pretrained(base, str(final))  # a normal PEFT adapter folder


def test_resume_equals_uninterrupted(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from bnr.config import TrainConfig
    from bnr.seeding import seed_everything
    from bnr.train import train

    cfg = TrainConfig(lr=5e-3, epochs=2, batch_size=4, progress=False, save_every=1)

    def run(stop: int | None, ckpt: Path | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        seed_everything(0)
        job, model, tok, examples = prepared(tiny_model_dir, tiny_data, tmp_path / "cfg", "panacea")
        job.work_dir = None
        hooks = job.defense.training_hooks(job, model, tok, examples)
        train(model, examples, cfg, seed=0, pad_id=tok.pad_token_id, checkpoint_dir=ckpt, stop_after=stop, hooks=hooks)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, hooks.callbacks[0].eps

    full, full_eps = run(None, None)
    run(2, tmp_path / "ckpt")
    resumed, resumed_eps = run(None, tmp_path / "ckpt")
    assert all(torch.equal(full[n], resumed[n]) for n in full)
    assert all(torch.equal(full_eps[n], resumed_eps[n]) for n in full_eps)


def test_panacea_through_pipeline_and_sweep(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    deliverable = through_pipeline(tiny_model_dir, tiny_data, tmp_path / "p", "panacea")
    assert deliverable == tmp_path / "p" / "final" and read_manifest(deliverable)["stage"] == "panacea"
    through_sweep(tiny_model_dir, tiny_data, tmp_path, "panacea")


@pytest.mark.parametrize("bad", ["defenses.panacea.rho=-1", "defenses.panacea.eps=1", "defenses.panacea.n=0"])
def test_bad_options_are_one_line_errors(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["finetune", *tiny_overrides(tiny_model_dir, tiny_data, tmp_path), "user.defense=panacea", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bnr: error:") and "defenses.panacea" in err[0]
