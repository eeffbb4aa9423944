"""`bnr train-safety` and `bnr analyze grads` end to end on the tiny model (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.artifacts import is_complete, read_manifest
from bnr.cli import main
from conftest import tiny_overrides


@pytest.fixture(scope="module")
def analyze_run(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("analyze")
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp)
    assert main(["train-buffer", *over, f"buffer.out={tmp / 'buffer'}", "buffer.train.max_steps=2"]) == 0
    safety = [
        f"analyze.safety.data.path={tiny_data['refusal']}",
        "analyze.safety.lora.r=4",
        "analyze.safety.lora.alpha=8",
        "analyze.safety.train.max_steps=3",
        "analyze.safety.train.lr=5e-3",
        "analyze.safety.train.progress=false",
        f"analyze.safety.out={tmp / 'safety'}",
    ]
    assert main(["train-safety", *over, *safety]) == 0
    args = [
        "analyze",
        "grads",
        *over,
        *safety,
        f"buffer={tmp / 'buffer'}",
        "n=5",
        f"out={tmp / 'grads'}",
        f"analyze.harmful_data.path={tiny_data['harmful']}",
        f"analyze.harmless_data.path={tiny_data['benign']}",
        "analyze.train_safety=true",
        f"analyze.directions.copy={tmp / 'safety'}",
        f"analyze.conditions=[{{name: with-lora, lora: {tmp / 'safety'}}}]",
        "analyze.probe_r=2",
        "analyze.probe_alpha=4",
        "analyze.batch_size=2",
        "analyze.landscape.enabled=true",
        "analyze.landscape.steps=3",
        "analyze.landscape.n=2",
    ]
    assert main(args) == 0
    return tmp / "grads"


def test_report_contents(analyze_run: Path) -> None:
    assert is_complete(analyze_run) and read_manifest(analyze_run)["stage"] == "analyze"
    rep = json.loads((analyze_run / "grads.json").read_text())
    assert rep["sign"] == "update" and set(rep["directions"]) == {"safety", "copy"}
    assert list(rep["conditions"]) == ["aligned", "jailbroken", "with-lora"]
    for cond in rep["conditions"].values():
        assert set(cond["data"]) == {"harmful", "harmless"}
        for d in cond["data"].values():
            assert d["n"] == 5
            types = {r["type"] for r in d["rows"]}
            assert types == {"q", "v", "gate", "up", "down", "all"}
            assert len([r for r in d["rows"] if r["type"] != "all"]) == 10
            for r in d["rows"]:
                assert r["S"]["safety"] == pytest.approx(r["S"]["copy"])  # same adapter, same numbers
                assert r["D"]["safety"] >= 0 and r["grad_norm"] > 0
            assert len(d["landscape"]["loss"]) == 3
    lora_rows = rep["conditions"]["with-lora"]["data"]["harmful"]["rows"]
    assert {"analyzed.A", "analyzed.B", "probe.A", "probe.B"} <= set(lora_rows[0]["lora_grad_norm"])
    assert rep["comparison"]["harmful"]["jailbroken"]["late_grad_norm_vs_aligned"] > 0
    per = json.loads((analyze_run / "per_sample.json").read_text())
    assert len(per["aligned"]["harmful"]["loss"]) == 5
    for name in ("sgs_safety.png", "sgs_copy.png", "grad_norms.png", "landscape.png"):
        assert (analyze_run / "plots" / name).stat().st_size > 1000


def test_bad_analysis_config(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
    assert main(["analyze", "grads", *over, "sign=sideways"]) == 2
    assert "analyze.sign" in capsys.readouterr().err
    dup = [
        "analyze.conditions=[{name: aligned}]",
        f"analyze.harmful_data.path={tiny_data['harmful']}",
        f"analyze.harmless_data.path={tiny_data['benign']}",
        f"out={tmp_path / 'g'}",
    ]
    assert main(["analyze", "grads", *over, *dup]) == 2
    assert "unique" in capsys.readouterr().err
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()
