"""The `alignment` provider artifact (V = W_aligned - W_unaligned) and the base-weight defenses that read it
(safelora, asft) or prune on harmful data (antidote), through pipeline and sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from aligned_pair import make_unaligned, pair_overrides

from bnr.artifacts import read_manifest
from bnr.cli import main
from conftest import assert_sweep_rows, tiny_eval_overrides, tiny_overrides

BASE_WEIGHT_DEFENSES = ["safelora", "antidote", "asft"]


@pytest.fixture(scope="module")
def unaligned(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_unaligned(tiny_model_dir, tmp_path_factory.mktemp("unaligned") / "model")


@pytest.fixture(scope="module")
def alignment(tiny_model_dir: Path, tiny_data: dict[str, Path], unaligned: Path, tmp_path_factory) -> Path:
    from bnr.config import load_config
    from bnr.defenses.alignment import build

    root = tmp_path_factory.mktemp("alignment")
    cfg = load_config(None, [*tiny_overrides(tiny_model_dir, tiny_data, root), *pair_overrides(unaligned, root / "a")])
    return build(cfg)


def test_direction_is_aligned_minus_unaligned(tiny_model_dir: Path, unaligned: Path, alignment: Path) -> None:
    from transformers import AutoModelForCausalLM

    from bnr.defenses.alignment import load_alignment

    V = load_alignment(alignment)
    a = dict(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).named_modules())
    u = dict(AutoModelForCausalLM.from_pretrained(str(unaligned)).named_modules())
    targets = ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")
    expected = {n for n, m in a.items() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets}
    assert set(V) == expected and len(V) == 10
    for name, v in V.items():
        assert torch.equal(v, a[name].weight - u[name].weight)
    m = read_manifest(alignment)
    assert m["stage"] == "alignment" and m["unaligned_model"]["name_or_path"] == str(unaligned)


def test_project_equals_the_dense_alignment_matrix() -> None:
    from bnr.defenses.alignment import project

    g = torch.Generator().manual_seed(0)
    V, X = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    C = V @ V.T / torch.linalg.matrix_norm(V)
    assert torch.allclose(project(V, X), C @ X)
    assert torch.equal(project(torch.zeros(6, 5), X.float()), torch.zeros(6, 3))


def test_missing_unaligned_is_a_one_line_error(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    for defense in ("safelora", "asft"):
        assert main(["pipeline", *over, f"user.defense={defense}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "model.unaligned" in err[0]
    assert not (tmp_path / "alignment").exists()


def test_pipeline_builds_the_alignment_once_and_shares_it(
    tiny_model_dir: Path, tiny_data: dict[str, Path], unaligned: Path, tmp_path: Path
) -> None:
    root = tmp_path / "p"
    over = [*tiny_overrides(tiny_model_dir, tiny_data, root), f"model.unaligned={unaligned}"]
    stamp = None
    for defense in BASE_WEIGHT_DEFENSES:
        assert main(["pipeline", *over, f"user.defense={defense}", "defenses.antidote.n=6"]) == 0
        user = read_manifest(root / "user")
        # antidote trains like sft, as safelora does: pipeline reuses safelora's UserLoRA for it
        assert user["defense"] == ("safelora" if defense == "antidote" else defense) and not user["contains_buffer"]
        if defense == "asft":  # trains with the alignment direction; its deliverable is the UserLoRA
            assert [p["role"] for p in user["parents"]] == ["alignment"]
        else:  # edits the UserLoRA after training
            final = read_manifest(root / "final")
            assert final["stage"] == defense and final["parents"][0]["role"] == "user" and not user["parents"]
        if defense != "antidote":
            t = (root / "alignment" / "manifest.json").stat().st_mtime_ns
            assert stamp in (None, t)  # built once, reused by the next defense that needs it
            stamp = t
    assert not (root / "buffer").exists()  # none of the three needs the buffer
    assert stamp is not None


def test_base_weight_defenses_through_sweep(
    tiny_model_dir: Path, tiny_data: dict[str, Path], unaligned: Path, alignment: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    argv = [
        "sweep",
        *tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "unused"),
        *tiny_eval_overrides(tiny_data, tmp_path / "eval"),
        *pair_overrides(unaligned, alignment),
        "defenses.antidote.n=6",
        f"sweep.out={out}",
        f"sweep.defenses=[{','.join(BASE_WEIGHT_DEFENSES)}]",
        "sweep.p=[0.5]",
        "sweep.seeds=[1]",
        "sweep.n=[12]",
        "sweep.plots=false",
    ]
    assert main(argv) == 0
    assert_sweep_rows(out, BASE_WEIGHT_DEFENSES)
