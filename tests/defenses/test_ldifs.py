"""LDIFS: weight 0 is SFT bitwise, the regulariser is zero at the initial model and pulls towards it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from e2e import adapter_tensors, prepared, through_pipeline, through_sweep

from bnr.cli import main
from conftest import tiny_overrides


def _user(model_dir: Path, data: dict[str, Path], out: Path, defense: str, *extra: str) -> Path:
    over = tiny_overrides(model_dir, data, out)
    assert main(["finetune", *over, f"user.defense={defense}", f"user.out={out / 'user'}", *extra]) == 0
    return out / "user"


def test_weight_zero_equals_sft_bitwise(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    sft = adapter_tensors(_user(tiny_model_dir, tiny_data, tmp_path / "sft", "sft"))
    zero = adapter_tensors(_user(tiny_model_dir, tiny_data, tmp_path / "l0", "ldifs", "defenses.ldifs.weight=0"))
    strong = adapter_tensors(_user(tiny_model_dir, tiny_data, tmp_path / "l1", "ldifs", "defenses.ldifs.weight=10"))
    assert sft.keys() == zero.keys() and all(torch.equal(sft[k], zero[k]) for k in sft)
    assert any(not torch.equal(sft[k], strong[k]) for k in sft)  # the term is really there
    # it pulls towards the initial model: a smaller update than SFT's
    assert sum(strong[k].norm() for k in sft if "lora_B" in k) < sum(sft[k].norm() for k in sft if "lora_B" in k)


def test_distance_is_zero_at_the_initial_model(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from bnr.data.tokenize import collate

    job, model, _, examples = prepared(tiny_model_dir, tiny_data, tmp_path, "ldifs", "defenses.ldifs.weight=1")
    hooks = job.defense.training_hooks(job, model, None, examples)
    batch = collate(examples[:4], 0)
    ce = model(**batch).loss
    from bnr.train import StepContext

    assert torch.equal(hooks.loss_fn(model, batch, StepContext(0, 1)), ce)  # B = 0: features identical
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    assert hooks.loss_fn(model, batch, StepContext(0, 1)) > model(**batch).loss


def test_ldifs_through_pipeline_and_sweep(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    deliverable = through_pipeline(tiny_model_dir, tiny_data, tmp_path / "p", "ldifs")
    assert deliverable == tmp_path / "p" / "user"
    through_sweep(tiny_model_dir, tiny_data, tmp_path, "ldifs")


@pytest.mark.parametrize("bad", ["defenses.ldifs.weight=-1", "defenses.ldifs.lambda=1", "defenses.ldifs.skip_above=0"])
def test_bad_options_are_one_line_errors(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["finetune", *tiny_overrides(tiny_model_dir, tiny_data, tmp_path), "user.defense=ldifs", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bnr: error:") and "defenses.ldifs" in err[0]
    assert not (tmp_path / "user").exists()
