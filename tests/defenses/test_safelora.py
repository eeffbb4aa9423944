"""SafeLoRA: exactly the modules below the similarity threshold (or the k least similar) are projected to
(C B, A); every other tensor of the UserLoRA is bit-identical in the deliverable."""

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

    root = tmp_path_factory.mktemp("safelora-pair")
    unaligned = make_unaligned(tiny_model_dir, root / "unaligned")
    over = pair_overrides(unaligned, root / "alignment")
    build(load_config(None, [*tiny_overrides(tiny_model_dir, tiny_data, root), *over]))
    return over


def _run(over: list[str], pair: list[str], out: Path, *extra: str) -> tuple[Path, Path]:
    argv = [*over, *pair, "user.defense=safelora", f"user.out={out / 'user'}", f"user.final_out={out / 'final'}"]
    assert main(["finetune", *argv, *extra]) == 0
    return out / "user", out / "final"


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))


def _check_projection(user: Path, final: Path, pair: list[str], projected: set[str]) -> None:
    from bnr.defenses.alignment import load_alignment, project

    V = load_alignment(pair[1].split("=", 1)[1])
    before, after = _tensors(user), _tensors(final)
    assert set(before) == set(after)
    for key, t in before.items():
        module = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        if module in projected and ".lora_B." in key:
            assert torch.allclose(after[key], project(V[module], t), atol=1e-6)
            assert not torch.equal(after[key], t)
        else:
            assert torch.equal(after[key], t), key  # untouched: bit-identical
    assert (final / "adapter_config.json").read_text() == (user / "adapter_config.json").read_text()


def test_projects_exactly_the_least_similar_layers(tiny_model_dir, tiny_data, tmp_path, pair) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    user, final = _run(over, pair, tmp_path / "k", "defenses.safelora.select=number", "defenses.safelora.num_layers=4")
    notes = read_manifest(final)["defense_notes"]
    cos = notes["similarity"]
    lowest = sorted(cos, key=lambda m: cos[m])[:4]
    assert len(cos) == 10 and sorted(notes["projected"]) == sorted(lowest)
    _check_projection(user, final, pair, set(lowest))

    # threshold mode with a threshold between the 4th and 5th similarity: the same 4 modules, no others
    ranked = sorted(cos.values())
    threshold = (ranked[3] + ranked[4]) / 2
    user2, final2 = _run(over, pair, tmp_path / "t", f"defenses.safelora.threshold={threshold}")
    notes2 = read_manifest(final2)["defense_notes"]
    below = {m for m, c in notes2["similarity"].items() if c < threshold}
    assert set(notes2["projected"]) == below == set(lowest)
    _check_projection(user2, final2, pair, below)


def test_threshold_extremes_project_nothing_or_everything(tiny_model_dir, tiny_data, tmp_path, pair) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    user, final = _run(over, pair, tmp_path / "none", "defenses.safelora.threshold=-1")
    assert read_manifest(final)["defense_notes"]["projected"] == []
    _check_projection(user, final, pair, set())
    user, final = _run(over, pair, tmp_path / "all", "defenses.safelora.threshold=1")
    assert len(read_manifest(final)["defense_notes"]["projected"]) == 10


def test_similarity_in_factor_space_equals_the_dense_one() -> None:
    from bnr.defenses.alignment import project
    from bnr.defenses.safelora import similarity

    g = torch.Generator().manual_seed(1)
    V, B, A = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((8, 6), (8, 3), (3, 6)))
    CB = project(V, B)
    dense = torch.nn.functional.cosine_similarity((CB @ A).reshape(1, -1), (B @ A).reshape(1, -1)).item()
    assert similarity(CB, B, A) == pytest.approx(dense, abs=1e-12)


@pytest.mark.parametrize(
    "bad",
    [
        "defenses.safelora.thresh=0.1",
        "defenses.safelora.threshold=1.5",
        "defenses.safelora.num_layers=-1",
        "defenses.safelora.select=all",
    ],
)
def test_bad_options_are_one_line_errors(tiny_model_dir, tiny_data, tmp_path, pair, capsys, bad: str) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    assert main(["finetune", *over, *pair, "user.defense=safelora", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "defenses.safelora" in err[0]
    assert not (tmp_path / "user").exists()
