"""AsFT: weight 0 is plain SFT bit for bit; a positive weight shrinks the update's part orthogonal to the
alignment direction; the penalty equals its dense definition."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from aligned_pair import make_unaligned, pair_overrides

from bnr.artifacts import read_manifest
from bnr.cli import main
from conftest import tiny_overrides


@pytest.fixture(scope="module")
def pair(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from bnr.config import load_config
    from bnr.defenses.alignment import build

    root = tmp_path_factory.mktemp("asft-pair")
    over = pair_overrides(make_unaligned(tiny_model_dir, root / "unaligned", scale=0.2), root / "alignment")
    build(load_config(None, [*tiny_overrides(tiny_model_dir, tiny_data, root), *over]))
    return over


def _user(over: list[str], pair: list[str], out: Path, defense: str, *extra: str) -> Path:
    assert main(["finetune", *over, *pair, f"user.defense={defense}", f"user.out={out}", *extra]) == 0
    return out


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))


def _orthogonal(run: Path, pair: list[str]) -> float:
    from bnr.defenses.alignment import load_alignment
    from bnr.defenses.asft import orthogonal_penalty
    from bnr.lora_files import read_lora

    V = load_alignment(pair[1].split("=", 1)[1])
    return sum(float(orthogonal_penalty(V[n], m.B, m.A)) for n, m in read_lora(run).modules.items())


def test_weight_zero_is_sft_bitwise(tiny_model_dir, tiny_data, tmp_path, pair) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    sft = _tensors(_user(over, pair, tmp_path / "sft", "sft"))
    asft = _tensors(_user(over, pair, tmp_path / "asft0", "asft", "defenses.asft.weight=0"))
    assert sft.keys() == asft.keys() and all(torch.equal(sft[k], asft[k]) for k in sft)


def test_penalty_shrinks_the_orthogonal_update(tiny_model_dir, tiny_data, tmp_path, pair) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    sft = _user(over, pair, tmp_path / "sft", "sft")
    asft = _user(over, pair, tmp_path / "asft", "asft", "defenses.asft.weight=10")
    m = read_manifest(asft)
    assert m["defense"] == "asft" and [p["role"] for p in m["parents"]] == ["alignment"]
    assert _orthogonal(asft, pair) < 0.5 * _orthogonal(sft, pair)


def test_penalty_equals_the_dense_definition() -> None:
    from bnr.defenses.asft import orthogonal_penalty

    g = torch.Generator().manual_seed(2)
    V, B, A = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((7, 5), (7, 2), (2, 5)))
    C = V @ V.T / torch.linalg.matrix_norm(V)
    dense = torch.linalg.matrix_norm((torch.eye(7, dtype=torch.float64) - C) @ B @ A) ** 2
    assert float(orthogonal_penalty(V, B, A)) == pytest.approx(float(dense), rel=1e-10)


@pytest.mark.parametrize("bad", ["defenses.asft.weight=-1", "defenses.asft.lambda=1"])
def test_bad_options_are_one_line_errors(tiny_model_dir, tiny_data, tmp_path, pair, capsys, bad: str) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    assert main(["finetune", *over, *pair, "user.defense=asft", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "defenses.asft" in err[0]
