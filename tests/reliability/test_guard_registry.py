"""Issue 21 section 2 (the guard fails closed) and section 7 (untrained adapters; corrupt or running parents)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from reliability_runs import cli

from bnr import guard
from bnr.cli import main
from bnr.lora_files import LoraModule, read_lora, write_lora


def _merge(stage_runs: dict[str, Path], out: Path, user: Path | None = None) -> list[str]:
    return ["merge", f"user={user or stage_runs['user']}", f"reinforce={stage_runs['reinforce']}", f"out={out}"]


@pytest.mark.parametrize("state", ["empty", "missing"])
def test_merge_refuses_without_a_registry(
    state: str,
    stage_runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An exact copy of the buffer used to pass when the registry was a fresh folder; now nothing passes."""
    registry = tmp_path / "registry"
    if state == "empty":
        registry.mkdir()
    monkeypatch.setenv(guard.REGISTRY_ENV, str(registry))
    copy = tmp_path / "copy"
    shutil.copytree(stage_runs["buffer"], copy)
    (copy / "manifest.json").unlink()
    for user in (copy, stage_runs["user"]):
        rc, line = cli(_merge(stage_runs, tmp_path / "m", user), capsys)
        assert rc == 2 and f"buffer registry {str(registry)!r} is {state}" in line, line
        assert "guard.no_buffer_registered=true" in line and not (tmp_path / "m").exists()


def test_no_buffer_registered_is_explicit(
    stage_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(guard.REGISTRY_ENV, str(tmp_path / "fresh"))
    assert main([*_merge(stage_runs, tmp_path / "m"), "guard.no_buffer_registered=true"]) == 0


def test_finetune_export_refuses_without_a_registry(
    tiny_over: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(guard.REGISTRY_ENV, str(tmp_path / "fresh"))
    argv = ["finetune", *tiny_over, "user.defense=none", f"user.out={tmp_path / 'u'}"]
    rc, line = cli(argv, capsys)
    assert rc == 2 and "so finetune cannot check its output" in line, line
    assert not (tmp_path / "u").exists() and not (tmp_path / "u.partial").exists()
    assert main([*argv, "guard.no_buffer_registered=true"]) == 0


def _registry_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the session's registry (its buffers), set as the registry; returns the first entry."""
    copy = tmp_path / "registry"
    shutil.copytree(guard.registry_dir(), copy)
    monkeypatch.setenv(guard.REGISTRY_ENV, str(copy))
    return copy / guard.entries()[0]["key"]


@pytest.mark.parametrize("damage", ["truncated entry.json", "entry.json deleted", "factors deleted", "key edited"])
def test_damaged_entry_is_an_error_not_skipped(
    damage: str,
    stage_runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry = _registry_copy(tmp_path, monkeypatch)
    text = (entry / guard.ENTRY).read_text()
    if damage == "truncated entry.json":
        (entry / guard.ENTRY).write_text(text[: len(text) // 2])
    elif damage == "entry.json deleted":
        (entry / guard.ENTRY).unlink()
    elif damage == "factors deleted":
        (entry / guard.FACTORS).unlink()
    else:
        (entry / guard.ENTRY).write_text(json.dumps(json.loads(text) | {"key": "other"}))
    rc, line = cli(_merge(stage_runs, tmp_path / "m"), capsys)
    assert rc == 2 and f"buffer registry entry {str(entry)!r} is damaged" in line, line
    assert "bnr buffers register" in line and not (tmp_path / "m").exists()
    rc, line = cli([*_merge(stage_runs, tmp_path / "m"), "guard.no_buffer_registered=true"], capsys)
    assert rc == 2 and "is damaged" in line  # the knob accepts no registry, never a damaged one


def test_registration_in_progress_is_not_an_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _registry_copy(tmp_path, monkeypatch)
    (entry.parent / ".abc.partial").mkdir()
    keys = [e["key"] for e in guard.entries()]
    assert entry.name in keys and "abc" not in keys and ".abc.partial" not in keys


@pytest.mark.parametrize("command", ["train-buffer", "train-reinforce", "finetune"])
def test_training_refuses_an_untrained_adapter(
    command: str,
    stage_runs: dict[str, Path],
    tiny_over: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A learning rate that moves nothing (1e-50 rounds every update to 0) leaves B = 0: refused, not written."""
    stage = {"train-buffer": "buffer", "train-reinforce": "reinforce", "finetune": "user"}[command]
    before = guard.entries()
    argv = [command, *tiny_over, f"{stage}.train.lr=1e-50", f"{stage}.out={tmp_path / 'run'}"]
    if command != "train-buffer":
        argv.append(f"{stage}.buffer={stage_runs['buffer']}")
    if command == "finetune":
        argv.append("user.defense=bnr-buffer-only")
    rc, line = cli(argv, capsys)
    assert rc == 2 and "the trained LoRA is all zeros" in line, line
    assert not (tmp_path / "run").exists() and guard.entries() == before


def test_register_refuses_an_untrained_adapter(
    stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora = read_lora(stage_runs["sft"])
    zero = {n: LoraModule(m.A, torch.zeros_like(m.B), m.scaling) for n, m in lora.modules.items()}
    folder = write_lora(zero, tmp_path / "untrained", None, lora.task_type)
    rc, line = cli(["buffers", "register", str(folder)], capsys)
    assert rc == 2 and "untrained LoRA" in line, line


def test_zero_tensors_never_match_byte_for_byte(stage_runs: dict[str, Path], tmp_path: Path) -> None:
    """An all-zero factor matches any all-zero factor of its shape; it is left out of the exact match."""
    lora = read_lora(stage_runs["buffer"], allow_buffer=True)
    key = sorted(lora.modules)[0]
    untrained = {key: LoraModule(lora.modules[key].A, torch.zeros_like(lora.modules[key].B), 1.0)}
    buffer = guard.Buffer("old", "an entry of an older bnr", guard.content_hashes(untrained), guard._folded(untrained))
    harmless = read_lora(stage_runs["sft"]).modules
    harmless[key] = LoraModule(harmless[key].A, torch.zeros_like(harmless[key].B), 1.0)  # one module untrained
    hashes = set(guard.content_hashes(harmless, skip_zero=True))
    assert not guard.similarity(guard._folded(harmless), buffer, hashes).exact
    assert guard.similarity(guard._folded(harmless), buffer, set(guard.content_hashes(harmless))).exact  # before


@pytest.mark.parametrize("manifest", ["corrupt", "running"])
def test_merge_refuses_a_corrupt_or_running_parent(
    manifest: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = tmp_path / "user"
    shutil.copytree(stage_runs["user"], user)
    text = (user / "manifest.json").read_text()
    if manifest == "corrupt":
        (user / "manifest.json").write_text(text[: len(text) // 3])
    else:
        (user / "manifest.json").write_text(json.dumps(json.loads(text) | {"status": "running"}))
    rc, line = cli(_merge(stage_runs, tmp_path / "m", user), capsys)
    assert rc == 2 and "is not a complete bnr run" in line, line
    assert not (tmp_path / "m").exists()
