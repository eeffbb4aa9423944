"""experiments/smollm2_comparison.py, which makes docs/results.md's SmolLM2 table, on a small sweep folder the test
writes (no model: the script reads evaluations and manifests only)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "smollm2_comparison.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smollm2_comparison", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _eval(folder: Path, hs: float, refused: float, fa: float, answers: list[str], wall: float, cached: bool) -> None:
    metrics = {
        "harmful": {"hs_keyword": hs, "hs_content": hs - 10, "agreement_content": 80.0},
        "over-refusal": {"refusal_rate": refused, "refusal_rate[stl_I-PhysicalSafetySafe]": refused + 10},
        "sst2": {"accuracy": fa},
    }
    for name, m in metrics.items():
        _write(folder / f"{name}.json", {"metrics": m, "wall_time_s": wall, "cached_completions": cached})
    (folder / "sst2.samples.jsonl").write_text("".join(json.dumps({"completion": a}) + "\n" for a in answers))


@pytest.fixture()
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # cell.json paths are relative to where the sweep ran
    out = Path("sw")
    _eval(out / "base" / "eval", 30, 40, 0, ["I'm sorry, I can't help with that.", "positive"], 1.0, True)
    _write(out / "providers" / "buffer-x" / "manifest.json", {"wall_time_s": 600.0})
    _write(out / "providers" / "reinforce-x" / "manifest.json", {"wall_time_s": 400.0})
    for seed, train in ((42, 100.0), (30, 140.0)):
        user = out / "users" / f"u{seed}"
        _write(user / "manifest.json", {"wall_time_s": train})
        for defense, hs in (("sft", 50 + seed / 10), ("bnr", 10.0)):
            cell = out / "cells" / f"{defense}-p0.1-n200-s{seed}"
            _write(cell / "cell.json", {"user": str(user)})
            _eval(cell / "eval", hs, 30, 60, ["positive", "negative"], 40.0 if seed == 30 else 2.0, seed == 42)
    return out


def test_the_table_has_mean_std_over_seeds_and_one_training_per_userlora(script: ModuleType, sweep: Path) -> None:
    cells = script.rows(sweep)
    lines = script.table(cells).splitlines()
    base, sft, bnr = lines[2], lines[3], lines[4]
    assert base.startswith("| aligned base |") and "| 50.0 |" in base  # one refusal in two SST-2 answers
    assert base.endswith("| - | cached |")
    assert sft.startswith("| sft | 0.1 | - | 30,42 | 53.6 ± 0.8 |")  # 53.0 and 54.2 (HS = 50 + seed / 10)
    assert "| 120.0 ± 28.3 | 120.0 |" in sft  # trainings 100 and 140; the cached seed-42 evaluation is left out
    assert bnr.startswith("| bnr | 0.1 | - | 30,42 | 10.0 ± 0.0 |") and "| sft's |" in bnr


def test_the_cost_prices_every_stage_at_its_measured_median(script: ModuleType, sweep: Path) -> None:
    line = script.cost(sweep, script.rows(sweep))
    # 1000 s of provider stages + 2 trainings x median 120 + 5 evaluations x 120 (the one uncached median)
    assert line.endswith("= 1840 s (0.51 h)"), line
    assert "2 user trainings" in line and "5 evaluations" in line


def test_every_cell_has_its_own_wall_times(script: ModuleType, sweep: Path) -> None:
    _write(sweep / "cells" / "bnr-p0.1-n200-s30" / "final" / "manifest.json", {"wall_time_s": 3.0})
    lines = script.per_cell(script.rows(sweep)).splitlines()[2:]
    assert lines == [
        "| sft-p0.1-n200-s30 | 140 | - | 120 |",
        "| sft-p0.1-n200-s42 | 100 | - | cached |",
        "| bnr-p0.1-n200-s30 | = sft-p0.1-n200-s30 | 3 | 120 |",
        "| bnr-p0.1-n200-s42 | = sft-p0.1-n200-s42 | - | cached |",
    ]


def test_the_lookalike_table_sets_each_merge_beside_the_sweep_s_own(script: ModuleType, sweep: Path) -> None:
    for seed in (42, 30):
        _eval(sweep / "lookalike" / f"eval-paper-s{seed}", 12.0, 25, 70, ["positive"], 1.0, False)
    lines = script.lookalike(sweep).splitlines()[2:]
    assert lines[:2] == [
        "| 30 | paper | preset | (0.5, 0.5) | 10.0 | 0.0 | 30.0 | 40.0 | 60.0 |",
        "| 30 | paper | look-alike | (0.5, 0.5) | 12.0 | 2.0 | 25.0 | 35.0 | 70.0 |",
    ]
    assert lines[-2:] == [
        "| mean of 2 | paper | preset | - | 10.0 ± 0.0 | 0.0 ± 0.0 | 30.0 ± 0.0 | 40.0 ± 0.0 | 60.0 ± 0.0 |",
        "| mean of 2 | paper | look-alike | - | 12.0 ± 0.0 | 2.0 ± 0.0 | 25.0 ± 0.0 | 35.0 ± 0.0 | 70.0 ± 0.0 |",
    ]
