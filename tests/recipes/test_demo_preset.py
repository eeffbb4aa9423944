"""`bnr demo` is the `toy-demo` preset of `bnr sweep`: same cells, same stages, same table; resumable.

Runs the demo end to end on a random tiny Llama with the toy world's tokenizer (so it needs no toy base and
takes seconds); tests/toy/test_demo.py runs the reduced demo on the real toy base.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.cli import COMMANDS, main
from bnr.config import load_config
from bnr.defenses import canonical_name
from bnr.orchestrate import grid
from bnr.recipes import sweep


@pytest.fixture(scope="module")
def toy_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bnr.tiny import build_tiny_model_dir
    from bnr.toy.world import all_texts

    root = tmp_path_factory.mktemp("tiny-toy")
    return build_tiny_model_dir(root, all_texts(), hidden=32, layers=2, heads=4, intermediate=64)


def _fast(model: Path) -> list[str]:
    """The toy-demo preset, shrunk: tiny model, small provider sets, n = 16, 4 eval samples of 4 tokens."""
    items = [f"model.name_or_path={model}", "toy.threads=1", "eval.limit=4", "eval.max_new_tokens=4"]
    for stage in ("buffer", "reinforce", "user"):
        items += [f"{stage}.train.epochs=1", f"{stage}.train.batch_size=4", f"{stage}.train.progress=false"]
    items += ["buffer.n=16", "reinforce.n_refusal=8", "reinforce.n_benign=8", "eval.progress=false"]
    return [*items, "sweep.n=[16]", "sweep.seeds=[7]", "sweep.p=[0.5]"]


def test_the_demo_command_runs_the_toy_demo_sweep_preset() -> None:
    assert COMMANDS["demo"].default_config == "toy-demo"
    cfg = load_config("toy-demo")
    assert [canonical_name(d) for d in cfg.sweep.defenses] == ["sft", "bnr-buffer-only", "bnr", "bnr-reinforce-only"]
    assert cfg.sweep.include_base and cfg.sweep.axes == {"merge.scale": [0.5, 1.0]}
    cells = grid.grid(cfg)
    # sft never reads merge.*: 1 + 3 x 2 cells per (p, seed), as the README's demo table has rows
    assert len(cells) == 7 * len(cfg.sweep.p) * len(cfg.sweep.seeds)
    assert {c.defense for c in cells} == set(cfg.sweep.defenses)


def test_demo_equals_its_sweep_preset_and_resumes(
    toy_tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    fast = _fast(toy_tiny_model)
    # a first run stopped after 3 cells, as if interrupted; the rerun finishes the rest
    assert main(["demo", *fast, f"out={out}", "max_cells=3"]) == 0
    status = json.loads((out / "sweep.json").read_text())
    assert status["finished"] == 3 and len(status["pending"]) == 4
    assert main(["demo", *fast, f"out={out}"]) == 0
    printed = capsys.readouterr().out
    cfg = load_config("toy-demo", [*fast, f"sweep.out={out}"])
    names = [c.name for c in grid.grid(cfg)]
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(names)
    assert "bnr-reinforce-only-p0.5-n16-s7-merge.scale1" in names

    results = json.loads((out / "results.json").read_text())
    assert [c["cell"] for c in results["cells"]] == names
    labels = [r["defense"] for r in results["rows"]]
    assert labels[0] == sweep.BASE_LABEL and "sft" in labels and "bnr merge.scale=0.5" in labels
    assert results["base"]["hs"] == results["rows"][0]["hs_mean"]
    for row in results["rows"]:
        assert {"p", "n", "hs_mean", "hs_std", "over_refusal_mean", "fa_mean", "seeds"} <= set(row)
    assert set(results["timing_s"]) == {"sweep"}  # no toy base to build for a given model
    table = (out / "table.md").read_text()
    assert table in printed and sweep.BASE_LABEL in table
    assert (out / "overview.png").stat().st_size > 1000

    # `bnr sweep` on the demo's preset and folder: every stage current, nothing rebuilt, the same table
    manifests = sorted(out.glob("**/manifest.json"))
    stamps = [m.stat().st_mtime_ns for m in manifests]
    assert main(["sweep", "-c", "toy-demo", *fast, f"sweep.out={out}"]) == 0
    assert sorted(out.glob("**/manifest.json")) == manifests
    assert [m.stat().st_mtime_ns for m in manifests] == stamps
    assert (out / "table.md").read_text() == table
    # two UserLoRAs trained for seven cells: bnr-buffer-only trains like bnr, bnr-reinforce-only like sft
    assert len(list((out / "users").glob("*/manifest.json"))) == 2


def test_removed_demo_knobs_name_their_replacement(capsys: pytest.CaptureFixture[str]) -> None:
    for item, hint in [("ps=[0.1]", "use p (sweep.p)"), ("toy.methods=[sft]", "sweep.defenses")]:
        assert main(["demo", item]) == 2
        assert hint in capsys.readouterr().err
