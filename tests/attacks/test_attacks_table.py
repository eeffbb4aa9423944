"""A sweep with a `user.attack` axis (each cell trained on its attack's file, keyed apart) and
scripts/attacks_table.py, which makes docs/attacks.md's tables from it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from bnr.cli import main
from bnr.orchestrate.grid import read_cell
from conftest import tiny_eval_overrides, tiny_overrides

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "attacks_table.py"


def test_attack_axis_sweep_and_its_tables(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "x") + tiny_eval_overrides(tiny_data, tmp_path / "e")
    over += [
        f"sweep.out={tmp_path / 'sw'}",
        "sweep.defenses=[sft]",
        "sweep.p=[0.25]",
        "sweep.n=[12]",
        "sweep.seeds=[42,30]",
        "sweep.plots=false",
        "sweep.axes={user.attack: [harmful-mix, backdoor-tune, benign-only]}",
        "eval.benchmarks=[harmful,over-refusal,sst2,harmful-backdoor]",
        f"eval.data.harmful-backdoor.path={tiny_data['harmful']}",
        "guard.no_buffer_registered=true",  # sft alone: no buffer in this provider's registry
    ]
    assert main(["sweep", *over]) == 0
    users = {read_cell(p.parent)["user"] for p in (tmp_path / "sw" / "cells").glob("*/cell.json")}
    assert len(users) == 6  # every attack x seed trained its own UserLoRA (the attack is in the stage key)
    for u in users:
        data = json.loads((Path(u) / "manifest.json").read_text())["data"]
        assert data["attack"] in ("harmful-mix", "backdoor-tune", "benign-only")
        assert len(data["poisoned_ids"]) == (0 if data["attack"] == "benign-only" else 3)

    spec = importlib.util.spec_from_file_location("attacks_table", SCRIPT)
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    capsys.readouterr()
    script.main(["-c", "toy", *over])  # the toy preset + the same overrides: the cells are found through the grid
    out = capsys.readouterr().out
    assert out.startswith("6 finished cells")
    assert "| sft | " in out and "backdoor-tune HS plain / worst" in out and "worst case" in out
    assert "| harmful | harmful-backdoor |" in out  # the inference-time table: one column per harmful benchmark
    assert "| benign-only | 2 |" in out  # the cost table counts cells per attack
