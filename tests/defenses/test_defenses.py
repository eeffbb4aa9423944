"""Every defense through the common interface (finetune, pipeline, sweep) on the tiny model, with its invariant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bnr.artifacts import is_complete, read_manifest
from bnr.cli import main
from conftest import assert_sweep_rows, tiny_eval_overrides, tiny_overrides

CANONICAL = ["sft", "safeinstruct", "bnr", "bnr-buffer-only", "bnr-reinforce-only"]


@pytest.fixture(scope="module")
def providers(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("providers")
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    assert main(["train-buffer", *over, f"buffer.out={root / 'buffer'}"]) == 0
    argv = ["train-reinforce", *over, f"reinforce.buffer={root / 'buffer'}", f"reinforce.out={root / 'reinforce'}"]
    assert main(argv) == 0
    return root


def _finetune(over: list[str], providers: Path, out: Path, defense: str, *extra: str) -> tuple[Path, Path]:
    """(user run, deliverable) of `bnr finetune` with `defense`."""
    from bnr.config import load_config
    from bnr.orchestrate import userjob

    argv = [
        *over,
        f"user.defense={defense}",
        f"user.buffer={providers / 'buffer'}",
        f"merge.reinforce={providers / 'reinforce'}",
        f"user.out={out / 'user'}",
        f"user.final_out={out / 'final'}",
        *extra,
    ]
    assert main(["finetune", *argv]) == 0
    job = userjob.make_job(load_config(None, argv))
    deliverable = job.final_out if is_complete(job.final_out) else out / "user"
    return out / "user", deliverable


@pytest.fixture()
def over(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> list[str]:
    return tiny_overrides(tiny_model_dir, tiny_data, tmp_path)


def test_ls_lists_every_defense_and_alias(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "defenses"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]}
    assert {*CANONICAL, "none", "buffer-only", "reinforce-only"} <= listed


def test_sft_deliverable_is_the_user_run(over: list[str], providers: Path, tmp_path: Path) -> None:
    user, deliverable = _finetune(over, providers, tmp_path, "none")
    m = read_manifest(user)
    assert deliverable == user and m["defense"] == "sft" and m["parents"] == [] and not m["trained_with_buffer"]
    assert not (tmp_path / "final").exists()


@pytest.mark.parametrize("ratio,n_user,expected", [(0.25, 12, 3), (0.1, 12, 1), (0.0, 12, 0)])
def test_safeinstruct_adds_exactly_the_configured_refusals(
    over: list[str],
    providers: Path,
    tmp_path: Path,
    tiny_data: dict[str, Path],
    ratio: float,
    n_user: int,
    expected: int,
) -> None:
    from bnr.config import DataConfig
    from bnr.data.sources import load_records

    user, deliverable = _finetune(
        over, providers, tmp_path, "safeinstruct", f"defenses.safeinstruct.ratio={ratio}", f"user.n={n_user}"
    )
    m = read_manifest(user)
    refusal_ids = {r.id for r in load_records(DataConfig(path=str(tiny_data["refusal"])))}
    trained = m["data"].get("trained_on", m["data"])
    assert deliverable == user and m["training"]["examples"] == n_user + expected == trained["count"]
    assert sum(i in refusal_ids for i in trained["ids"]) == expected == m["defense_notes"]["refusals_added"]
    assert m["data"]["n"] == n_user and m["defense_options"]["ratio"] == ratio


def test_safeinstruct_exact_count_and_bad_option(over: list[str], providers: Path, tmp_path: Path) -> None:
    user, _ = _finetune(over, providers, tmp_path, "safeinstruct", "defenses.safeinstruct.n=5")
    assert read_manifest(user)["defense_notes"]["refusals_added"] == 5
    assert main(["finetune", *over, "user.defense=safeinstruct", "defenses.safeinstruct.count=5"]) == 2


@pytest.mark.parametrize("scale", [None, 1.0])
def test_bnr_buffer_only_has_no_reinforce(
    over: list[str], providers: Path, tmp_path: Path, scale: float | None
) -> None:
    from safetensors.torch import load_file

    extra = [] if scale is None else [f"defenses.bnr-buffer-only.scale={scale}"]
    user, deliverable = _finetune(over, providers, tmp_path, "buffer-only", "merge.scale=0.5", *extra)
    m = read_manifest(user)
    assert m["defense"] == "bnr-buffer-only" and m["trained_with_buffer"] and not m["contains_buffer"]
    assert [p["role"] for p in m["parents"]] == ["buffer"]
    if scale == 1.0:  # the UserLoRA as trained is the deliverable
        assert deliverable == user and not (tmp_path / "final").exists()
        return
    final = read_manifest(deliverable)
    recorded = {k: v for k, v in final.items() if k != "command"}  # the command line names merge.reinforce=
    assert [p["role"] for p in final["parents"]] == ["user"] and "reinforce" not in json.dumps(recorded)
    # exactly 0.5 * dU: same A, B scaled by 0.5 * (alpha / r); no reinforce factor anywhere
    got, trained = (
        load_file(str(deliverable / "adapter_model.safetensors")),
        load_file(str(user / "adapter_model.safetensors")),
    )
    assert set(got) == set(trained)
    for key, t in trained.items():
        assert got[key].shape == t.shape
        expected = t if "lora_A" in key else 0.5 * 2.0 * t  # tiny LoRA: r 4, alpha 8 -> s = 2
        torch.testing.assert_close(got[key], expected)


def test_bnr_buffer_only_full_is_the_trained_userlora(over: list[str], providers: Path, tmp_path: Path) -> None:
    """The paper's BufferLoRA-only row: the buffer-trained UserLoRA at full strength, whatever merge.scale says."""
    user, deliverable = _finetune(over, providers, tmp_path, "buffer-only-full", "merge.scale=0.5")
    m = read_manifest(user)
    assert m["defense"] == "bnr-buffer-only-full" and m["trained_with_buffer"] and not m["contains_buffer"]
    assert deliverable == user and not (tmp_path / "final").exists()


def test_bnr_reinforce_only_merges_without_buffer(over: list[str], providers: Path, tmp_path: Path) -> None:
    user, deliverable = _finetune(over, providers, tmp_path, "reinforce-only")
    assert not read_manifest(user)["trained_with_buffer"] and read_manifest(user)["parents"] == []
    final = read_manifest(deliverable)
    assert deliverable == tmp_path / "final" and final["stage"] == "merge" and final["merge"]["method"] == "qr"
    assert [p["role"] for p in final["parents"]] == ["user", "reinforce"]


@pytest.mark.parametrize("method", ["qr", "naive"])
def test_bnr_trains_with_buffer_and_merges_with_the_method(
    over: list[str], providers: Path, tmp_path: Path, method: str
) -> None:
    user, deliverable = _finetune(over, providers, tmp_path, "bnr", f"merge.method={method}")
    assert read_manifest(user)["trained_with_buffer"]
    final = read_manifest(deliverable)
    assert final["merge"]["method"] == method and not final["contains_buffer"]


def test_missing_provider_fails_before_training(over: list[str], providers: Path, tmp_path: Path) -> None:
    argv = ["finetune", *over, "user.defense=bnr", f"user.buffer={providers / 'buffer'}", f"user.out={tmp_path / 'u'}"]
    assert main([*argv, f"merge.reinforce={tmp_path / 'nope'}"]) == 2
    assert not (tmp_path / "u").exists() and not (tmp_path / "u.partial").exists()


def test_every_defense_through_pipeline_shares_providers(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    from bnr.defenses import get_defense

    root = tmp_path / "p"
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    buffer_stamp, user_stamps = None, {}
    for defense in CANONICAL:
        assert main(["pipeline", *over, f"user.defense={defense}"]) == 0
        assert read_manifest(root / "user")["defense"] in (defense, get_defense(defense).trains_like)
        user_stamps[defense] = (root / "user" / "manifest.json").stat().st_mtime_ns
        if (root / "buffer").exists():
            stamp = (root / "buffer" / "manifest.json").stat().st_mtime_ns
            assert buffer_stamp in (None, stamp)  # built once, then reused by every defense that needs it
            buffer_stamp = stamp
    assert buffer_stamp is not None
    assert user_stamps["bnr-buffer-only"] == user_stamps["bnr"]  # trains like bnr: its UserLoRA run is reused


def test_every_defense_through_sweep(
    tiny_model_dir: Path, tiny_data: dict[str, Path], providers: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    argv = [
        "sweep",
        *tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "unused"),
        *tiny_eval_overrides(tiny_data, tmp_path / "eval"),
        f"user.buffer={providers / 'buffer'}",
        f"merge.reinforce={providers / 'reinforce'}",
        "sweep.providers=given",
        f"sweep.out={out}",
        f"sweep.defenses=[{','.join(CANONICAL)}]",
        "sweep.p=[0.5]",
        "sweep.seeds=[1]",
        "sweep.n=[12]",
        "sweep.plots=false",
    ]
    assert main(argv) == 0
    assert_sweep_rows(out, CANONICAL)
    # five defenses, three distinct trainings: bnr-buffer-only trains like bnr, bnr-reinforce-only like sft
    assert len(list((out / "users").glob("*/manifest.json"))) == 3
