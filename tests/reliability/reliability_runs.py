"""Helpers shared by the reliability tests (fixtures `stage_runs` and `tiny_over` live in tests/conftest.py)."""

from __future__ import annotations

import pytest

from bnr.cli import main


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, last `bnr: error:` line) of one CLI call."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("bnr: error:")]
    return rc, lines[-1] if lines else ""


def child_env() -> dict[str, str]:
    """The environment of a `bnr` child process: one torch thread (as this test process uses; on a loaded 2-core
    machine several threads per process make a tiny model's step 100x slower)."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
