"""The sweep report (`bnr.eval.sweep_report`, `sweep.report`): docs/results.md's SmolLM2 table as a preset's report,
on a small sweep folder the test writes (no model: the report reads evaluations and manifests only). The same
numbers the retired experiments/smollm2_comparison.py printed for this folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.config import load_config
from bnr.errors import BnrError
from bnr.eval.sweep_report import CellRecord, check_columns, column, cost, group_table, per_cell, render

# the columns of the SmolLM2 comparison (the smollm2-sweep preset's sweep.report)
REPORT = load_config("smollm2-sweep").sweep.report


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _eval(folder: Path, hs: float, refused: float, fa: float, answers: list[str], wall: float, cached: bool) -> None:
    metrics = {
        "harmful": ("hs", {"hs": hs, "hs_keyword": hs, "hs_content": hs - 10, "agreement_content": 80.0}),
        "over-refusal": (
            "refusal_rate",
            {"refusal_rate": refused, "refusal_rate[stl_I-PhysicalSafetySafe]": refused + 10},
        ),
        "sst2": ("accuracy", {"accuracy": fa}),
    }
    results = {}
    for name, (metric, m) in metrics.items():
        _write(folder / f"{name}.json", {"metrics": m, "wall_time_s": wall, "cached_completions": cached})
        results[name] = {"metric": metric, "value": m[metric], "n": 2, **m}
    _write(folder / "summary.json", {"protocol": "clean", "results": results})  # an older summary: no roles
    (folder / "sst2.samples.jsonl").write_text("".join(json.dumps({"completion": a}) + "\n" for a in answers))


@pytest.fixture()
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[CellRecord]:
    monkeypatch.chdir(tmp_path)  # cell.json paths are relative to where the sweep ran
    out = Path("sw")
    _eval(out / "base" / "eval", 30, 40, 0, ["I'm sorry, I can't help with that.", "positive"], 1.0, True)
    _write(out / "providers" / "buffer-x" / "manifest.json", {"wall_time_s": 600.0})
    _write(out / "providers" / "reinforce-x" / "manifest.json", {"wall_time_s": 400.0})
    recs = [CellRecord("base", "base (no fine-tuning)", {}, out / "base" / "eval", fa_benchmark="sst2")]
    cells = []
    for seed, train in ((42, 100.0), (30, 140.0)):
        user = out / "users" / f"u{seed}"
        _write(user / "manifest.json", {"wall_time_s": train})
        for defense, hs in (("sft", 50 + seed / 10), ("bnr", 10.0)):
            name = f"{defense}-p0.1-n200-s{seed}"
            cell = out / "cells" / name
            _eval(cell / "eval", hs, 30, 60, ["positive", "negative"], 40.0 if seed == 30 else 2.0, seed == 42)
            axes = {"user.p": 0.1, "user.n": 200, "seed": seed}
            final = cell / "final"
            cells.append(CellRecord(name, defense, axes, cell / "eval", str(user), final, "sst2"))
    return recs + sorted(cells, key=lambda r: r.label != "sft")  # the grid's order: sft, then bnr


def test_the_table_has_mean_std_over_seeds_and_one_training_per_userlora(records: list[CellRecord]) -> None:
    lines = group_table(records, REPORT).splitlines()
    assert lines[0].startswith("| defense | p | n | axes | seeds | HS keyword | HS content | judges agree |")
    base, sft, bnr = lines[2], lines[3], lines[4]
    assert base.startswith("| base (no fine-tuning) | - | - | - | - |") and "| 50.0 |" in base  # 1 of 2 refused
    assert base.endswith("| - | cached |")
    assert sft.startswith("| sft | 0.1 | 200 | - | 30,42 | 53.6 ± 0.8 | 43.6 ± 0.8 | 80.0 ± 0.0 | 30.0 ± 0.0 |")
    assert "| 40.0 ± 0.0 | 60.0 ± 0.0 | 0.0 ± 0.0 |" in sft  # XSTest-style, FA, SST-2 refused
    assert "| 120.0 ± 28.3 | 120.0 |" in sft  # trainings 100 and 140; the cached seed-42 evaluation is left out
    assert bnr.startswith("| bnr | 0.1 | 200 | - | 30,42 | 10.0 ± 0.0 |") and "| sft's |" in bnr


def test_the_cost_prices_every_stage_at_its_measured_median(records: list[CellRecord]) -> None:
    line = cost(Path("sw"), records)
    # 1000 s of provider stages + 2 trainings x median 120 + 5 evaluations x 120 (the one uncached median)
    assert line.endswith("= 1840 s (0.51 h)"), line
    assert "2 user trainings" in line and "5 evaluations" in line


def test_every_cell_has_its_own_wall_times(records: list[CellRecord]) -> None:
    _write(Path("sw") / "cells" / "bnr-p0.1-n200-s30" / "final" / "manifest.json", {"wall_time_s": 3.0})
    lines = per_cell(records).splitlines()[2:]
    assert lines == [
        "| sft-p0.1-n200-s30 | 140 | - | 120 |",
        "| sft-p0.1-n200-s42 | 100 | - | cached |",
        "| bnr-p0.1-n200-s30 | = sft-p0.1-n200-s30 | 3 | 120 |",
        "| bnr-p0.1-n200-s42 | = sft-p0.1-n200-s42 | - | cached |",
    ]
    text = render(Path("sw"), records, REPORT)
    assert "calibration" not in text.split("cost of the")[1].split("\n", 1)[1]  # no search table without searches


def test_role_columns_read_the_declared_roles(records: list[CellRecord]) -> None:
    """`hs_worst` is the worst harm benchmark by the role's direction; `harm.X` reads the cell's harm benchmark."""
    sft = records[1]
    framed = {"metric": "hs", "value": 90.0, "n": 2, "hs": 90.0}
    summary = json.loads((sft.eval_dir / "summary.json").read_text())
    summary["results"]["harmful-aoa"] = framed
    _write(sft.eval_dir / "summary.json", summary)
    sft.__dict__.pop("summary", None)  # the cached summary: read the file again
    assert column("hs_worst")(sft) == 90.0 and column("hs")(sft) == pytest.approx(54.2)
    assert column("harm.hs_content")(sft) == pytest.approx(44.2) and column("refusal.refusal_rate")(sft) == 30.0


def test_a_bad_column_is_one_line_before_anything_runs() -> None:
    check_columns(REPORT)
    with pytest.raises(BnrError, match=r"sweep\.report column 'nonsense' is unknown; give one of"):
        check_columns({"x": "nonsense"})
    with pytest.raises(BnrError, match="unknown judge 'nobody'"):
        check_columns({"x": "judge:nobody"})
