"""scripts/sweep_seeds.py: a sweep's results.jsonl as one row per label with each seed's HS / over-refusal / FA."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sweep_seeds.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sweep_seeds", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_per_label_in_seed_order_missing_seed_dashed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"label": "bnr", "seed": 30, "hs": 0.0, "over_refusal": 1.0, "fa": 50.5},
        {"label": "sft", "seed": 42, "hs": 100.0, "over_refusal": 0.0, "fa": 84.0},
        {"label": "bnr", "seed": 42, "hs": 2.0, "over_refusal": 0.0, "fa": 69.25},
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    _load().main([str(path), "42", "30"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| row | HS (42 / 30) | over-refusal (42 / 30) | FA (42 / 30) |"
    assert out[2] == "| bnr | 2.0 / 0.0 | 0.0 / 1.0 | 69.2 / 50.5 |"  # the order asked, not the file's
    assert out[3] == "| sft | 100.0 / - | 0.0 / - | 84.0 / - |"  # a seed without a cell
    assert len(out) == 4
