"""The P4 demo digests (benchmarks/p4_jobs.py) compare two `bnr demo` folders bit for bit without their timings:
wall times and run-folder paths do not change them, any computed number does."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
TABLE = """**n = 1000** (mean +- std over seeds)

| Defense | HS p=0.1 | FA p=0.1 | user job s p=0.1 | user job s avg |
|---|---:|---:|---:|---:|
| sft | 100.0 | {fa} | {s} | {s} |
"""


def _demo(root: Path, *, fa: float = 84.0, seconds: float = 70.0) -> Path:
    results: dict[str, Any] = {
        "rows": [{"defense": "sft", "fa_mean": fa, "train_s_mean": seconds, "train_s_std": 1.0}],
        "cells": [{"cell": "sft-p0.1", "fa": fa, "train_s": seconds}],
        "base": {"label": "base", "eval": str(root / "base" / "eval"), "fa": 75.5},
        "wall_time_s": 3 * seconds,
        "timing_s": {"sweep": 2 * seconds},
        "config": {"sweep": {"out": str(root)}},
    }
    root.mkdir(parents=True)
    (root / "results.json").write_text(json.dumps(results))
    (root / "table.md").write_text(TABLE.format(fa=fa, s=seconds))
    return root


def test_digests_ignore_timings_and_paths_but_not_numbers(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from p4_jobs import demo_digests
    finally:
        sys.path.remove(str(BENCH))
    one = demo_digests(_demo(tmp_path / "a"))
    assert set(one) == {"results_digest", "table_digest"}
    assert demo_digests(_demo(tmp_path / "b", seconds=99.0)) == one  # other wall times, other folder
    other = demo_digests(_demo(tmp_path / "c", fa=84.5))
    assert other["results_digest"] != one["results_digest"] and other["table_digest"] != one["table_digest"]


def test_the_background_rounds_are_collected_and_a_failure_reported(tmp_path: Path, monkeypatch: Any) -> None:
    import subprocess
    import time

    sys.path.insert(0, str(BENCH))
    try:
        import p4_jobs
        from common import Scale, figure
    finally:
        sys.path.remove(str(BENCH))

    def background(code: str) -> Any:
        out, log = tmp_path / "rounds.json", tmp_path / "rounds.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=sink, stderr=subprocess.STDOUT)
        return p4_jobs.Background(proc, log, out, time.perf_counter())

    fig = figure("P4.defense.sft", "x", 1.0).as_dict()
    code = f"import time, json, pathlib; time.sleep(0.2); pathlib.Path({str(tmp_path / 'rounds.json')!r})"
    figs, info = p4_jobs.finish_rounds(background(code + f".write_text(json.dumps([{fig!r}]))"))
    assert [f.as_dict() for f in figs] == [fig] and info["rounds_wall_s"] >= 0.2
    assert not (tmp_path / "rounds.json").exists() and not (tmp_path / "rounds.log").exists()
    with pytest.raises(RuntimeError, match=r"P4's defense rounds failed \(1\): no space left"):
        p4_jobs.finish_rounds(background("raise SystemExit('no space left')"))
    monkeypatch.setattr(p4_jobs, "usable_cores", lambda: 1)
    assert p4_jobs.start_rounds(Scale(smoke=True, reps=1), 1, "cpu") is None  # one core: nothing to overlap with
