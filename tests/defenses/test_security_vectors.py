"""Security Vectors: a provider stage built once and shared; the vector is frozen and active while the user
trains and absent from the output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from e2e import adapter_tensors, prepared, through_pipeline, through_sweep

from bnr.artifacts import read_manifest
from bnr.cli import main
from conftest import tiny_overrides

NAME = "security-vectors"


@pytest.fixture(scope="module")
def vector(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bnr.config import load_config
    from bnr.defenses.security_vectors import train_security_vector

    root = tmp_path_factory.mktemp("sv")
    cfg = load_config(None, [*tiny_overrides(tiny_model_dir, tiny_data, root), f"defenses.{NAME}.out={root / 'sv'}"])
    return train_security_vector(cfg)


def test_provider_is_a_harmful_lora_with_kl(vector: Path) -> None:
    m = read_manifest(vector)
    assert m["stage"] == "security-vector" and m["kl_weight"] == 0.01 and m["data"]["benign_kl"] == 24
    assert m["data"]["count"] == 12 and m["training"]["steps"] == 3  # buffer.data and buffer.train by default
    assert any("lora_B" in k and t.abs().sum() > 0 for k, t in adapter_tensors(vector).items())


def test_kl_to_base_is_zero_for_a_fresh_adapter(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from bnr.data.tokenize import collate
    from bnr.defenses.security_vectors import kl_to_base

    _, model, tok, examples = prepared(tiny_model_dir, tiny_data, tmp_path, "sft")
    model.eval()
    batch = collate(examples[:4], tok.pad_token_id)
    assert float(kl_to_base(model, batch).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    assert float(kl_to_base(model, batch).detach()) > 1e-3


@pytest.mark.parametrize("mode", ["merged", "separate"])
def test_vector_frozen_active_then_absent(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, vector: Path, mode: str
) -> None:
    extra = (f"defenses.{NAME}.out={vector}", f"defenses.{NAME}.mode={mode}")
    _, model, _, _ = prepared(tiny_model_dir, tiny_data, tmp_path / "prep", NAME, *extra)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".user." in n for n in trainable)
    if mode == "separate":
        assert set(model.active_adapters) == {"security_vector", "user"}
        assert any("security_vector" in n for n, _ in model.named_parameters())
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    before = adapter_tensors(vector)
    for defense, out in ((NAME, "sv"), ("sft", "sft")):
        argv = [*over, f"user.defense={defense}", f"user.out={tmp_path / out}", *extra]
        assert main(["finetune", *argv]) == 0
    user, sft = adapter_tensors(tmp_path / "sv"), adapter_tensors(tmp_path / "sft")
    assert user.keys() == sft.keys() and not any("security" in k for k in user)  # only the UserLoRA is saved
    assert any(not torch.equal(user[k], sft[k]) for k in user)  # the vector was active while training
    assert all(torch.equal(before[k], t) for k, t in adapter_tensors(vector).items())  # and frozen
    m = read_manifest(tmp_path / "sv")
    assert [p["role"] for p in m["parents"]] == ["security-vector"] and not m["contains_buffer"]
    assert not (tmp_path / "sv-final").exists()


def test_pipeline_builds_the_vector_once_and_retrains_on_a_changed_knob(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "p"
    assert through_pipeline(tiny_model_dir, tiny_data, root, NAME) == root / "user"
    stamp = (root / "security-vector" / "manifest.json").stat().st_mtime_ns
    assert not (root / "buffer").exists()  # only what the defense declares is built
    through_pipeline(tiny_model_dir, tiny_data, root, NAME, "user.train.lr=1e-3")
    assert (root / "security-vector" / "manifest.json").stat().st_mtime_ns == stamp
    through_pipeline(tiny_model_dir, tiny_data, root, NAME, f"defenses.{NAME}.kl_weight=0.5")
    assert read_manifest(root / "security-vector")["kl_weight"] == 0.5


def test_sweep_shares_one_vector(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    rows = through_sweep(tiny_model_dir, tiny_data, tmp_path, NAME, seeds="[1,2]")
    assert len(rows) == 2
    built = sorted(p.name for p in (tmp_path / "sweep" / "providers").iterdir())
    assert len(built) == 1 and built[0].startswith("security-vector-")


@pytest.mark.parametrize(
    "bad", [f"defenses.{NAME}.kl_weight=-1", f"defenses.{NAME}.lambda=1", f"defenses.{NAME}.mode=x"]
)
def test_bad_options_are_one_line_errors(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["finetune", *tiny_overrides(tiny_model_dir, tiny_data, tmp_path), f"user.defense={NAME}", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bnr: error:") and f"defenses.{NAME}" in err[0]


def test_missing_vector_fails_before_training(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    argv = [
        "finetune",
        *over,
        f"user.defense={NAME}",
        f"defenses.{NAME}.out={tmp_path / 'no'}",
        f"user.out={tmp_path / 'u'}",
    ]
    assert main(argv) == 2 and not (tmp_path / "u.partial").exists()
