"""Section 4: each stage checks its parents' roles, and "same base" is decided by content hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reliability_runs import cli

from bnr.cli import main
from bnr.runs.opening import _base_key


@pytest.mark.parametrize("wrong", ["reinforce", "user"])
def test_finetune_buffer_must_be_a_buffer_run(
    wrong: str, stage_runs: dict[str, Path], tiny_over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, line = cli(
        [
            "finetune",
            *tiny_over,
            "user.defense=bnr-buffer-only",
            f"user.buffer={stage_runs[wrong]}",
            f"user.out={tmp_path / 'u'}",
        ],
        capsys,
    )
    assert rc == 2 and f"is a {wrong!r} run" in line and "user.buffer expects a 'buffer' run" in line, line
    assert not (tmp_path / "u").exists()


def test_train_reinforce_buffer_must_be_a_buffer_run(
    stage_runs: dict[str, Path], tiny_over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train-reinforce", *tiny_over, f"reinforce.buffer={stage_runs['user']}", f"reinforce.out={tmp_path / 'r'}"]
    rc, line = cli(argv, capsys)
    assert rc == 2 and "reinforce.buffer expects a 'buffer' run" in line, line


def test_buffer_role_is_checked_by_content(
    stage_runs: dict[str, Path], tiny_over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user run whose manifest is edited to say 'buffer' is still not a buffer."""
    fake = tmp_path / "fake-buffer"
    shutil.copytree(stage_runs["user"], fake)
    text = (fake / "manifest.json").read_text().replace('"stage": "user"', '"stage": "buffer"')
    (fake / "manifest.json").write_text(text)
    rc, line = cli(
        ["finetune", *tiny_over, "user.defense=bnr-buffer-only", f"user.buffer={fake}", f"user.out={tmp_path / 'u'}"],
        capsys,
    )
    assert rc == 2 and "not a registered BufferLoRA by content" in line, line


def test_merge_with_user_and_reinforce_swapped(
    stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["merge", f"user={stage_runs['reinforce']}", f"reinforce={stage_runs['user']}", f"out={tmp_path / 'm'}"]
    rc, line = cli(argv, capsys)
    assert rc == 2 and "merge.user expects a 'user' run" in line, line


def test_same_base_by_content_not_by_name(
    stage_runs: dict[str, Path], tiny_over: list[str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Another path to the same files (here a symlink, like builtin:toy and its folder) is the same base."""
    alias = tmp_path / "alias"
    alias.symlink_to(tiny_model_dir, target_is_directory=True)
    argv = [
        "finetune",
        *tiny_over,
        "user.defense=bnr-buffer-only",
        f"model.name_or_path={alias}",
        f"user.buffer={stage_runs['buffer']}",
    ]
    assert main([*argv, f"user.out={tmp_path / 'u'}"]) == 0


def test_other_base_is_refused(
    stage_runs: dict[str, Path],
    tiny_over: list[str],
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    cfg = (other / "config.json").read_text()
    (other / "config.json").write_text(cfg.replace("{", '{"bnr_test_variant": 1,', 1))
    argv = [
        "finetune",
        *tiny_over,
        "user.defense=bnr-buffer-only",
        f"model.name_or_path={other}",
        f"user.buffer={stage_runs['buffer']}",
    ]
    rc, line = cli([*argv, f"user.out={tmp_path / 'u'}"], capsys)
    assert rc == 2 and "content hashes differ" in line, line


def test_base_key_ignores_names_for_local_folders() -> None:
    a = {"name_or_path": "builtin:toy", "local_hash": "x", "weight_sha256": {"model.safetensors": "ab"}}
    b = {
        "name_or_path": "/root/.cache/bnr/toy/base-1",
        "local_hash": "x",
        "weight_sha256": {"model.safetensors": "ab"},
    }
    assert _base_key(a) == _base_key(b)
    # the same sizes with other bytes, or a manifest that recorded only sizes, is another base
    assert _base_key(a) != _base_key({**a, "weight_sha256": {"model.safetensors": "cd"}})
    assert _base_key(a) != _base_key({**a, "weight_sha256": None, "weight_files": {"model.safetensors": 10}})
    assert _base_key({"name_or_path": "org/m"}) != _base_key({"name_or_path": "org/n"})
