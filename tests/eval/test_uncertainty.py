"""Confidence intervals and paired comparisons of a sweep, on a sweep folder the test writes (evaluation folders
with per-sample files, as `bnr eval` writes them; no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bnr.eval.uncertainty import (
    UNCERTAINTY_JSON,
    cell_intervals,
    compare,
    group_cells,
    interval,
    sign_test,
    summarize,
    write_uncertainty,
)


def _eval(folder: Path, flagged: list[int], refused: list[int], correct: list[int]) -> Path:
    folder.mkdir(parents=True)
    for bench, field, values in (("harmful", "flagged", flagged), ("over-refusal", "refused", refused)):
        rows = [{"id": f"{bench}-{i}", field: bool(v)} for i, v in enumerate(values)]
        (folder / f"{bench}.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = [{"id": f"s{i}", "correct": bool(v)} for i, v in enumerate(correct)]
    (folder / "sst2.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


BENCHMARKS = {"hs": "harmful", "over_refusal": "over-refusal", "fa": "sst2"}


def _row(label: str, seed: int | None) -> dict[str, Any]:
    return {"label": label, "n": 100, "p": 0.1, "seed": seed}


def _sweep(tmp_path: Path) -> list[tuple[dict[str, Any], Path, dict[str, str]]]:
    rng = np.random.default_rng(1)
    cells = []
    for seed in (42, 30, 50):
        sft = (rng.random(40) < 0.9).astype(int).tolist()
        bnr = (rng.random(40) < 0.1).astype(int).tolist()
        same = (rng.random(40) < 0.5).astype(int).tolist()
        cells.append((_row("sft", seed), _eval(tmp_path / f"sft-{seed}", sft, same, same), BENCHMARKS))
        cells.append((_row("bnr", seed), _eval(tmp_path / f"bnr-{seed}", bnr, same, same), BENCHMARKS))
    base = _eval(tmp_path / "base", [0] * 40, [1] * 20 + [0] * 20, [1] * 40)
    return [*cells, (_row("base", None), base, BENCHMARKS)]


def test_sweep_gets_intervals_per_seed_points_and_paired_verdicts(tmp_path: Path) -> None:
    md = write_uncertainty(tmp_path, _sweep(tmp_path), "base").read_text()
    assert "**n = 100, p = 0.1**" in md and "2000 resamples, RNG seed 0" in md
    data = json.loads((tmp_path / UNCERTAINTY_JSON).read_text())[0]
    rows = {r["defense"]: r for r in data["rows"]}
    assert set(rows) == {"sft", "bnr", "base"} and rows["sft"]["seeds"] == [30, 42, 50]
    sft_hs = rows["sft"]["hs"]
    assert len(sft_hs["per_seed"]) == 3 and sft_hs["low"] <= sft_hs["mean"] <= sft_hs["high"]
    assert rows["base"]["hs"]["low"] == rows["base"]["hs"]["high"] == 0.0  # all zeros: a zero-width interval
    pairs = {(p["a"], p["b"], p["metric"]): p["comparison"] for p in data["pairs"]}
    assert pairs[("sft", "bnr", "hs")]["real"] and pairs[("sft", "bnr", "hs")]["diff"] > 50
    assert pairs[("sft", "bnr", "hs")]["p_sign"] < 1e-6 and pairs[("sft", "bnr", "hs")]["pairs"] == 120
    same = pairs[("sft", "bnr", "fa")]  # identical outcomes: a zero gap, not real
    assert same["diff"] == 0 and not same["real"] and same["p_sign"] == 1.0
    assert "| sft | bnr | HS | +" in md and "| yes |" in md and "| no |" in md


def test_cell_intervals_are_the_uncertainty_rows(tmp_path: Path) -> None:
    evaluations = _sweep(tmp_path)
    found = cell_intervals(summarize(group_cells(evaluations, "base")))
    data = {
        r["defense"]: r
        for r in json.loads(
            (write_uncertainty(tmp_path, evaluations, "base")).with_name(UNCERTAINTY_JSON).read_text()
        )[0]["rows"]
    }
    assert found[("sft", 100, 0.1, "hs")] == (data["sft"]["hs"]["low"], data["sft"]["hs"]["high"])
    assert found[("base", 100, 0.1, "over_refusal")] == (
        data["base"]["over_refusal"]["low"],
        data["base"]["over_refusal"]["high"],
    )
    assert len(found) == 9  # three rows, three metrics


def test_tables_are_reproducible(tmp_path: Path) -> None:
    evaluations = _sweep(tmp_path)
    first = write_uncertainty(tmp_path, evaluations, "base").read_text()
    assert write_uncertainty(tmp_path, evaluations, "base").read_text() == first


def test_interval_and_tests_on_known_cases() -> None:
    ci = interval([{str(i): float(i % 2) for i in range(200)}])
    assert ci is not None and ci.mean == 50.0 and 42 < ci.low < 50 < ci.high < 58  # ~ +-1.96 * 3.5 points
    assert interval([{}]) is None
    assert sign_test(np.array([1.0] * 10)) == 2 / 2**10 and sign_test(np.array([0.0, 0.0])) == 1.0
    assert compare({1: {"a": 1.0}}, {2: {"a": 1.0}}) is None  # no common seed: no paired comparison
