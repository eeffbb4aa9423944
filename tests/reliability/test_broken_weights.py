"""Section 3: broken weights are errors, not safe models (merge inputs and outputs, eval)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from reliability_runs import cli
from safetensors.torch import load_file, save_file

from bnr.cli import main
from bnr.errors import BnrError
from bnr.orchestrate.evaluation import check_not_empty

Edit = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _broken(src: Path, dst: Path, edit: Edit) -> Path:
    shutil.copytree(src, dst)
    state = load_file(dst / "adapter_model.safetensors")
    save_file(edit(state), dst / "adapter_model.safetensors")
    return dst


def _first_b(value: float) -> Edit:
    def edit(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key = sorted(k for k in s if "lora_B" in k)[0]
        s[key] = s[key].clone()
        s[key][0, 0] = value
        return s

    return edit


BROKEN: dict[str, tuple[Edit, str]] = {
    "nan in B": (_first_b(float("nan")), "contains NaN"),
    "-inf in B": (_first_b(float("-inf")), "contains Inf"),
    "weights x1e30": (lambda s: {k: v * 1e30 for k, v in s.items()}, "non-finite or absurd"),
    "all zeros": (lambda s: {k: torch.zeros_like(v) for k, v in s.items()}, "all zeros"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("role", ["user", "reinforce"])
def test_merge_refuses_broken_inputs(
    case: str, role: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, expected = BROKEN[case]
    inputs = {"user": stage_runs["user"], "reinforce": stage_runs["reinforce"]}
    inputs[role] = _broken(inputs[role], tmp_path / "broken", edit)
    rc, line = cli(
        ["merge", f"user={inputs['user']}", f"reinforce={inputs['reinforce']}", f"out={tmp_path / 'm'}"], capsys
    )
    assert rc == 2 and expected in line, line
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


@pytest.mark.parametrize("scale", ["1e300", "1e30"])
def test_merge_refuses_non_finite_output(
    scale: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["merge", f"user={stage_runs['user']}", f"reinforce={stage_runs['reinforce']}", f"out={tmp_path / 'm'}"]
    rc, line = cli([*argv, f"scale={scale}"], capsys)
    assert rc == 2 and "the merged adapter" in line and "non-finite or absurd" in line, line
    assert not (tmp_path / "m").exists()


def _eval_args(tiny_data: dict[str, Path], out: Path) -> list[str]:
    data = f"eval.data.harmful.path={tiny_data['harmful']}"
    quiet = ["limit=2", "eval.cache=null", "eval.progress=false"]
    return ["benchmarks=harmful", "judges=keyword", data, f"out={out}", *quiet]


def test_eval_of_nan_adapter_is_not_scored(
    stage_runs: dict[str, Path],
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = _broken(stage_runs["user"], tmp_path / "nan", _first_b(float("nan")))
    argv = ["eval", f"target={bad}", f"model.name_or_path={tiny_model_dir}", *_eval_args(tiny_data, tmp_path / "e")]
    rc, line = cli(argv, capsys)
    assert rc == 2 and "NaN" in line, line
    assert not (tmp_path / "e").exists()


def test_eval_of_non_finite_logits_is_not_scored(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base whose weights are NaN (no adapter to catch it) generates nothing, which must not score HS 0."""
    model = tmp_path / "nan-model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    state = load_file(weights)
    save_file({k: torch.full_like(v, float("nan")) for k, v in state.items()}, weights, metadata={"format": "pt"})
    rc, line = cli(["eval", f"target={model}", *_eval_args(tiny_data, tmp_path / "e")], capsys)
    assert rc == 2 and "'model.embed_tokens.weight' contains NaN" in line, line


def test_mostly_empty_completions_are_marked_invalid(
    tiny_model_dir: Path,
    tiny_data: dict[str, Path],
    stage_runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The tiny random model answers nothing: its HS must not read as a score (exit 2, INVALID in the printed
    table, the target's model card untouched)."""
    assert check_not_empty("harmful", ["no", "", "sure"], "m") is None
    assert "2 of 3 harmful completions are empty" in str(check_not_empty("harmful", ["", " ", "sure"], "m"))
    user = tmp_path / "user"
    shutil.copytree(stage_runs["user"], user)
    card = (user / "README.md").read_text()
    argv = ["eval", f"target={user}", f"model.name_or_path={tiny_model_dir}", *_eval_args(tiny_data, tmp_path / "e")]
    rc, line = cli(argv, capsys)
    assert rc == 2 and "INVALID" in line and "not added to any model card" in line, line
    assert (user / "README.md").read_text() == card
    assert main(["eval", f"model.name_or_path={tiny_model_dir}", *_eval_args(tiny_data, tmp_path / "e2")]) == 2
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("| harmful |"))
    assert "INVALID (" in row, row
    agg = json.loads((tmp_path / "e" / "harmful.json").read_text())
    assert agg["metrics"]["valid"] is False and agg["metrics"]["empty_share"] > 0.5
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["valid"] is False


def _untied_with_nan_row(tiny_model_dir: Path, dst: Path, token: str) -> Path:
    """A copy of the tiny model with its own lm_head (untied) and a NaN embedding row for `token`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    token_id = tok.convert_tokens_to_ids(token)
    with torch.no_grad():
        model.model.embed_tokens.weight[token_id] = float("nan")
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


def test_nan_embedding_row_outside_the_probe_is_refused_at_load(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21's case: untied lm_head, a NaN embedding row for a token the fixed probe prompt never uses."""
    from bnr.config import ModelConfig
    from bnr.models import load_model_and_tokenizer

    model_dir = _untied_with_nan_row(tiny_model_dir, tmp_path / "m", "zorp")
    state = load_file(model_dir / "model.safetensors")
    assert "lm_head.weight" in state and bool(state["model.embed_tokens.weight"].isnan().any())
    rc, line = cli(["eval", f"target={model_dir}", *_eval_args(tiny_data, tmp_path / "e")], capsys)
    assert rc == 2 and "'model.embed_tokens.weight' contains NaN" in line, line
    assert not (tmp_path / "e").exists()
    with pytest.raises(BnrError, match="contains NaN"):
        load_model_and_tokenizer(ModelConfig(name_or_path=str(model_dir), device="cpu"))


def test_nan_logits_at_any_generation_step_are_an_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Weights that break after loading (or an overflow) show in the logits of whichever step uses them: every
    step of every batch is checked, not only the probe prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bnr.eval.generate import generate
    from bnr.orchestrate.evaluation import check_finite_logits

    model_dir = _untied_with_nan_row(tiny_model_dir, tmp_path / "m", "zorp")
    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    check_finite_logits(model, tok, "m")  # the fixed probe prompt does not see the broken row
    assert generate(model, tok, ["say hello", "name a color"], max_new_tokens=3, progress=False)
    with pytest.raises(BnrError, match="logits became NaN/Inf while generating"):
        generate(model, tok, ["say hello", "how do I zorp the blick"], max_new_tokens=3, progress=False)
