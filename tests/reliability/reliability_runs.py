"""Helpers shared by the reliability tests: one CLI call, and runs of every stage on the tiny model (seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bnr.cli import main
from conftest import tiny_overrides


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, last `bnr: error:` line) of one CLI call."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("bnr: error:")]
    return rc, lines[-1] if lines else ""


@pytest.fixture(scope="session")
def runs(
    tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """buffer, reinforce, user (bnr), sft (defense none, p=0.5) and merged runs on the tiny model."""
    root = tmp_path_factory.mktemp("runs")
    over = tiny_overrides(tiny_model_dir, tiny_data, root)
    out = {k: root / k for k in ("buffer", "reinforce", "user", "sft", "merged")}
    steps = [
        ["train-buffer", *over, f"buffer.out={out['buffer']}"],
        ["train-reinforce", *over, f"reinforce.buffer={out['buffer']}", f"reinforce.out={out['reinforce']}"],
        ["finetune", *over, f"user.buffer={out['buffer']}", f"user.out={out['user']}"],
        ["finetune", *over, "user.defense=none", "user.p=0.5", f"user.out={out['sft']}"],
        ["merge", f"user={out['user']}", f"reinforce={out['reinforce']}", f"out={out['merged']}"],
    ]
    for argv in steps:
        assert main(argv) == 0, argv
    return out


@pytest.fixture()
def over(tiny_model_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> list[str]:
    return tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
