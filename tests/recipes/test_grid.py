"""The grid engine: any config key as an axis, shorthand lists, validation, shared provider stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.artifacts import parent_path, read_manifest
from bnr.cli import main
from bnr.config import load_config
from bnr.errors import BnrError
from bnr.orchestrate import grid
from bnr.orchestrate.grid import read_cell
from conftest import tiny_eval_overrides, tiny_overrides


def test_shorthand_and_axes_make_the_product() -> None:
    cfg = load_config(
        None,
        [
            "sweep.defenses=[sft,bnr]",
            "sweep.p=[0.1]",
            "sweep.n=[10]",
            "sweep.seeds=[1,2]",
            "sweep.axes={merge.scale: [0.5, 1.0]}",
        ],
    )
    cells = grid.grid(cfg)
    # sft never reads merge.*: one sft cell per seed; bnr: one per (seed, scale)
    assert [c.name for c in cells] == [
        "sft-p0.1-n10-s1",
        "sft-p0.1-n10-s2",
        "bnr-p0.1-n10-s1-merge.scale0.5",
        "bnr-p0.1-n10-s1-merge.scale1",
        "bnr-p0.1-n10-s2-merge.scale0.5",
        "bnr-p0.1-n10-s2-merge.scale1",
    ]
    assert cells[2].label == "bnr merge.scale=0.5"
    ccfg = grid.cell_config(cfg, cells[3])
    assert ccfg.merge.scale == 1.0 and ccfg.seed == 1 and ccfg.user.defense == "bnr"


def test_a_defense_options_axis_varies_only_that_defense() -> None:
    args = ["sweep.defenses=[none,safelora,bnr]", "sweep.p=[0.1]", "sweep.n=[10]", "sweep.seeds=[1]"]
    cells = grid.grid(load_config(None, [*args, "sweep.axes={defenses.safelora.threshold: [0.5, 0.6]}"]))
    assert [c.name for c in cells] == [
        "none-p0.1-n10-s1",
        "safelora-p0.1-n10-s1-defenses.safelora.threshold0.5",
        "safelora-p0.1-n10-s1-defenses.safelora.threshold0.6",
        "bnr-p0.1-n10-s1",
    ]
    # options given under an alias belong to its defense (`buffer-only` is bnr-buffer-only), and no other's
    axis = "sweep.axes={defenses.buffer-only.scale: [0.5, 1.0]}"
    cells = grid.grid(load_config(None, ["sweep.defenses=[sft,bnr-buffer-only]", *args[1:], axis]))
    assert [c.name for c in cells] == [
        "sft-p0.1-n10-s1",
        "bnr-buffer-only-p0.1-n10-s1-defenses.buffer-only.scale0.5",
        "bnr-buffer-only-p0.1-n10-s1-defenses.buffer-only.scale1",
    ]


def test_an_axis_replaces_its_shorthand() -> None:
    cfg = load_config(
        None, ["sweep.p=[0.1,0.2]", "sweep.axes={user.p: [0.5]}", "sweep.seeds=[1]", "sweep.defenses=[sft]"]
    )
    assert [c.p for c in grid.grid(cfg)] == [0.5]


@pytest.mark.parametrize(
    "axis,message",
    [
        ("{merge.scal: [1.0]}", "unknown config key 'merge.scal'"),
        ("{merge.scale: [-1.0]}", "merge.scale must be > 0"),
        ("{user.defense: [magic]}", "unknown defense 'magic'"),
        ("{merge.scale: []}", "have no values"),
    ],
)
def test_bad_axes_fail_before_anything_runs(axis: str, message: str) -> None:
    cfg = load_config(None, ["sweep.seeds=[1]", "sweep.p=[0.1]", f"sweep.axes={axis}"])
    with pytest.raises(BnrError, match=message):
        grid.grid(cfg)


def test_sweep_builds_each_provider_configuration_once(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    argv = [
        "sweep",
        *tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "unused"),
        *tiny_eval_overrides(tiny_data, tmp_path / "eval"),
        f"sweep.out={out}",
        "sweep.defenses=[bnr]",
        "sweep.p=[0.5]",
        "sweep.seeds=[1]",
        "sweep.n=[12]",
        "sweep.plots=false",
        "sweep.axes={buffer.n: [6, 12], merge.scale: [0.5, 1.0]}",
    ]
    assert main(argv) == 0
    built = sorted(p.name.split("-")[0] for p in (out / "providers").iterdir() if not p.name.endswith(".partial"))
    assert built == ["buffer", "buffer", "reinforce", "reinforce"]  # one per buffer.n, shared across merge.scale
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["buffer.n"], r["merge.scale"]) for r in rows] == [(6, 0.5), (6, 1.0), (12, 0.5), (12, 1.0)]
    for r in rows:
        final = read_manifest(out / "cells" / r["cell"] / "final")
        assert final["merge"]["scale"] == r["merge.scale"]
        user = read_cell(out / "cells" / r["cell"])["user"]
        recorded = read_manifest(user)["parents"][0]["path"]
        assert recorded.startswith("../../providers/buffer-")  # in the sweep's tree: relative, no machine path
        buffer = parent_path(read_manifest(user), "buffer", user)
        assert buffer is not None
        assert read_manifest(buffer)["data"]["count"] == r["buffer.n"]
    assert "bnr buffer.n=6 merge.scale=0.5" in (out / "table.md").read_text()
    assert len(list((out / "users").glob("*/manifest.json"))) == 2  # one UserLoRA per buffer, shared across scales
    manifests = sorted(out.glob("**/manifest.json"))
    stamps = [m.stat().st_mtime_ns for m in manifests]
    assert main(argv) == 0  # rerun: every stage current, nothing rebuilt
    assert sorted(out.glob("**/manifest.json")) == manifests and [m.stat().st_mtime_ns for m in manifests] == stamps
    # a changed merge knob: every deliverable and evaluation redone, no UserLoRA or provider retrained
    users = sorted(out.glob("users/*/manifest.json")) + sorted(out.glob("providers/*/manifest.json"))
    before = [m.stat().st_mtime_ns for m in users]
    finals = sorted(out.glob("cells/*/final/manifest.json"))
    final_before = [m.stat().st_mtime_ns for m in finals]
    assert main([*argv, "merge.alpha=0.5"]) == 0
    assert [m.stat().st_mtime_ns for m in users] == before
    assert all(m.stat().st_mtime_ns != t for m, t in zip(finals, final_before))
    assert all(read_manifest(m.parent)["merge"]["alpha"] == 0.5 for m in finals)


def test_blocks_make_a_union_of_sub_grids() -> None:
    cfg = load_config(
        None,
        [
            "sweep.n=[10]",
            "sweep.seeds=[1]",
            "sweep.blocks=[{defenses: [sft, bnr], p: [0.1]}, {defenses: [bnr], p: [0.1, 0.5],"
            " axes: {merge.scale: [1.0]}}, {defenses: [sft], p: [0.1], seeds: [1, 2]}]",
        ],
    )
    names = [c.name for c in grid.grid(cfg)]
    assert names == [
        "sft-p0.1-n10-s1",
        "bnr-p0.1-n10-s1",
        "bnr-p0.1-n10-s1-merge.scale1",
        "bnr-p0.5-n10-s1-merge.scale1",
        "sft-p0.1-n10-s2",  # sft-p0.1-n10-s1 of the last block is already in the grid
    ]
    with pytest.raises(BnrError, match=r"sweep.blocks\[0\]: unknown key\(s\) \['colour'\]"):
        grid.grid(load_config(None, ["sweep.blocks=[{colour: red}]"]))


def test_a_toy_sweep_runs_with_toy_threads_and_restores_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bnr sweep -c toy-... toy.threads=1` runs its cells with 1 torch thread (the count changes the toy's numbers,
    as in `bnr demo`); a sweep of any other model keeps torch's count; the count is restored after."""
    import torch

    from bnr.recipes import sweep

    seen: list[int] = []
    monkeypatch.setattr(sweep, "execute", lambda cfg: seen.append(torch.get_num_threads()) or [])
    before = torch.get_num_threads()
    sweep.run(load_config("toy-grid", ["toy.threads=3", f"sweep.out={tmp_path / 'toy'}"]))
    sweep.run(load_config(None, ["model.name_or_path=some/model", "toy.threads=3", f"sweep.out={tmp_path / 'm'}"]))
    assert seen == [3, before] and torch.get_num_threads() == before
