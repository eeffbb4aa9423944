"""Antidote: every row of every LoRA factor loses exactly its configured share of weights - those with the
highest Wanda scores |W| * ||X|| on the re-alignment set - and nothing else changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bnr.artifacts import read_manifest
from bnr.cli import main
from conftest import tiny_overrides


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))


def _finetune(over: list[str], out: Path, *extra: str) -> tuple[Path, Path]:
    argv = [*over, "user.defense=antidote", f"user.out={out / 'user'}", f"user.final_out={out / 'final'}", *extra]
    assert main(["finetune", *argv]) == 0
    return out / "user", out / "final"


@pytest.mark.parametrize("ratio", [0.25, 0.1])
def test_prunes_exactly_the_ratio_of_each_row(tiny_model_dir, tiny_data, tmp_path, ratio: float) -> None:
    from bnr.defenses.antidote import pruned_per_row

    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    user, final = _finetune(over, tmp_path, f"defenses.antidote.ratio={ratio}", "defenses.antidote.n=6")
    before, after = _tensors(user), _tensors(final)
    assert set(before) == set(after) and len(before) == 20
    expected_total = 0
    for key, w in before.items():
        changed = after[key] != w
        assert torch.all(after[key][changed] == 0)  # pruned weights are zeroed, the rest bit-identical
        assert torch.equal(after[key][~changed], w[~changed])
        zeroed = (after[key] == 0) & (w != 0)
        k = pruned_per_row(w.shape[1], ratio)
        assert torch.all(zeroed.sum(1) == k), key  # exactly k per row (trained weights are never exactly 0)
        expected_total += k * w.shape[0]
    notes = read_manifest(final)["defense_notes"]
    assert sum(notes["pruned"].values()) == expected_total and notes["realignment_samples"] == 6
    assert read_manifest(final)["stage"] == "antidote"


def test_pruned_weights_are_the_highest_scores(tiny_model_dir, tiny_data, tmp_path) -> None:
    from bnr.config import load_config
    from bnr.data.sources import load_records
    from bnr.defenses.antidote import input_norms
    from bnr.orchestrate.userjob import make_job

    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    extra = ["defenses.antidote.ratio=0.25", "defenses.antidote.n=100", "defenses.antidote.batch_size=5"]
    user, final = _finetune(over, tmp_path, *extra)
    job = make_job(load_config(None, [*over, "user.defense=antidote", *extra]))
    # all 12 records in batches of 1: the padded batches of 5 above must give the same norms
    job = type(job)(job.cfg, job.defense, type(job.options)(ratio=0.25, n=100, batch_size=1), {}, job.final_out)
    norms = input_norms(job, user, load_records(job.cfg.buffer.data))
    before, after = _tensors(user), _tensors(final)
    for key, w in before.items():
        module, which = key.removeprefix("base_model.model.").split(".lora_")
        score = w.abs() * norms[f"{module}.{which[0]}"].reshape(1, -1)
        pruned = after[key] != w
        kept_max = score.masked_fill(pruned, float("-inf")).max(1).values
        pruned_min = score.masked_fill(~pruned, float("inf")).min(1).values
        assert torch.all(pruned_min >= kept_max - 1e-6), key


def test_prune_mask_edge_cases() -> None:
    from bnr.defenses.antidote import prune_mask, pruned_per_row

    score = torch.tensor([[1.0, 5.0, 3.0, 2.0], [4.0, 4.0, 4.0, 4.0]])
    assert not prune_mask(score, 0.0).any()
    mask = prune_mask(score, 0.5)
    assert mask[0].tolist() == [False, True, True, False]
    assert mask[1].tolist() == [False, False, True, True]  # ties: stable order, the last ones rank highest
    assert [pruned_per_row(c, 0.05) for c in (32, 4096, 10)] == [2, 205, 1]


@pytest.mark.parametrize(
    "bad",
    [
        "defenses.antidote.ratio=1.0",
        "defenses.antidote.ratio=-0.1",
        "defenses.antidote.n=0",
        "defenses.antidote.rate=1",
    ],
)
def test_bad_options_are_one_line_errors(tiny_model_dir, tiny_data, tmp_path, capsys, bad: str) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    assert main(["finetune", *over, "user.defense=antidote", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "defenses.antidote" in err[0]
