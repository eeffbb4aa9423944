"""`bnr attack-search`: an Optuna study over attacks and job knobs, stored as SQLite and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.cli import main
from bnr.orchestrate.api import TUNABLE_KNOBS
from bnr.orchestrate.grid import read_cell
from conftest import tiny_eval_overrides, tiny_overrides


def _argv(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, trials: int) -> list[str]:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "x") + tiny_eval_overrides(tiny_data, tmp_path / "e")
    return [
        "attack-search",
        *over,
        f"attack_search.out={tmp_path / 's'}",
        "attack_search.defenses=[sft]",
        f"attack_search.trials={trials}",
        "attack_search.attacks=[harmful-mix,backdoor-tune,benign-only]",
        "attack_search.p=[0.25,0.5]",
        "attack_search.n=[8,12]",
        "attack_search.epochs=[1]",
        "attack_search.lr_multipliers=[1,2]",
        "attack_search.batch_sizes=[4]",
        "attack_search.plots=true",
        "guard.no_buffer_registered=true",  # sft alone: no buffer in this provider's registry
    ]


def test_search_runs_its_budget_stores_the_study_and_resumes(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("optuna", reason="the attack extra is not installed")
    out = tmp_path / "s"
    assert main(_argv(tiny_model_dir, tiny_data, tmp_path, 2)) == 0
    rows = [json.loads(line) for line in (out / "sft" / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and (out / "sft" / "study.db").is_file() and (out / "search_curve.png").is_file()
    for r in rows:
        assert {"attack", "p", "n", *TUNABLE_KNOBS, "hs", "over_refusal", "fa"} <= set(r)
        assert r["objective"] == r["hs_max"]
        user = read_cell(Path(r["eval"]).parent)["user"]
        manifest = json.loads((user / "manifest.json").read_text())
        assert manifest["data"]["attack"] == r["attack"] and manifest["data"]["n"] == r["n"]
    table = (out / "summary.md").read_text()
    assert "| sft |" in table and table in capsys.readouterr().out
    every = table.split("Every trial:")[1]  # one row per trial, with its knobs and numbers
    assert [line.split(" | ")[1] for line in every.splitlines() if line.startswith("| sft |")] == ["0", "1"]
    # a larger budget resumes the stored study: two trials kept, one added
    assert main(_argv(tiny_model_dir, tiny_data, tmp_path, 3)) == 0
    again = [json.loads(line) for line in (out / "sft" / "trials.jsonl").read_text().splitlines()]
    assert len(again) == 3 and again[:2] == rows
    # other choices cannot resume that study: one line naming the choices and the fix, the study left as it was
    capsys.readouterr()
    other = [
        a.replace("lr_multipliers=[1,2]", "lr_multipliers=[1,4]")
        for a in _argv(tiny_model_dir, tiny_data, tmp_path, 4)
    ]
    assert main(other) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learning_rate_multiplier" in err[0] and "attack_search.out" in err[0], err
    assert len((out / "sft" / "trials.jsonl").read_text().splitlines()) == 3


def test_bad_search_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["attack-search", "-c", "toy", "attack_search.trials=0", f"attack_search.out={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "attack_search.trials must be >= 1" in err[0]
