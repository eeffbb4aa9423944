from __future__ import annotations

from pathlib import Path

import torch

from bnr.artifacts import read_manifest
from bnr.cli import main
from conftest import tiny_overrides


def test_align_writes_a_loadable_full_model(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    argv = [
        "align",
        *over,
        f"align.refusal_data.path={tiny_data['refusal']}",
        "align.lora.r=4",
        f"align.benign_data.path={tiny_data['benign']}",
        "align.train.lr=5e-3",
        "align.train.progress=false",
        f"align.out={tmp_path / 'aligned'}",
    ]
    assert main(argv) == 0
    assert read_manifest(tmp_path / "aligned", expect_stage="align")["full_model"] is True
    from bnr.config import ModelConfig
    from bnr.eval.target import resolve_target

    target = resolve_target(str(tmp_path / "aligned"), ModelConfig())  # `bnr eval target=<align run>` works
    assert target.base.name_or_path == str(tmp_path / "aligned") and target.adapter is None
    aligned = AutoModelForCausalLM.from_pretrained(str(tmp_path / "aligned"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert not any(n.startswith("base_model") for n, _ in aligned.named_parameters())
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        assert (aligned(ids).logits - base(ids).logits).abs().max() > 1e-4
    # `pipeline` with align.enabled aligns first and trains the later stages on the aligned model
    pipe = [*argv[1:-1], "align.enabled=true", "user.defense=none", f"out={tmp_path / 'p'}"]
    assert main(["pipeline", *pipe]) == 0
    assert read_manifest(tmp_path / "p" / "user")["base_model"]["name_or_path"] == str(tmp_path / "p" / "aligned")


def _full_align(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, out: str) -> list[str]:
    """`bnr align` with full fine-tuning of the tiny model on the tiny data, into `tmp_path / out`."""
    return [
        "align",
        *tiny_overrides(tiny_model_dir, tiny_data, tmp_path),
        f"align.refusal_data.path={tiny_data['refusal']}",
        f"align.benign_data.path={tiny_data['benign']}",
        "align.full=true",
        "align.train.lr=1e-3",
        "align.train.progress=false",
        f"align.out={tmp_path / out}",
    ]


def test_full_align_trains_every_weight(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    assert main(_full_align(tiny_model_dir, tiny_data, tmp_path, "aligned")) == 0
    aligned = load_file(str(tmp_path / "aligned" / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert aligned.keys() == base.keys()
    moved = {k for k in base if not torch.equal(aligned[k], base[k])}
    # a LoRA on q/v/gate/up/down never changes k_proj, o_proj or the norms; full fine-tuning does
    assert any(".k_proj." in k for k in moved) and any(".o_proj." in k for k in moved)
    assert any("norm" in k for k in moved)


def test_full_align_of_a_quantised_base_is_a_one_line_error(capsys) -> None:
    assert main(["align", "align.full=true", "model.quantize=4bit", "align.out=/nonexistent/never-written"]) == 2
    err = capsys.readouterr().err
    assert "align.full trains every weight" in err and "Traceback" not in err


def test_align_max_length_is_the_alignment_s_own_run_wide_length(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """`align.max_length` trains exactly as the run-wide `max_length` would (A9 was aligned with max_length=96,
    the smollm2 preset now says align.max_length: 96), and the manifest records the length used."""
    from safetensors.torch import load_file

    def align(out: str, *extra: str) -> dict[str, torch.Tensor]:
        assert main([*_full_align(tiny_model_dir, tiny_data, tmp_path, out), *extra]) == 0
        return load_file(str(tmp_path / out / "model.safetensors"))

    own = align("own", "align.max_length=68")
    run_wide = align("run-wide", "max_length=68")
    longer = align("longer")
    assert read_manifest(tmp_path / "own")["max_length"] == 68
    assert all(torch.equal(own[k], run_wide[k]) for k in own)
    assert any(not torch.equal(own[k], longer[k]) for k in own)  # truncation at 68 tokens is a real difference
