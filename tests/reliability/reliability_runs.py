"""Helpers shared by the reliability tests (fixtures `stage_runs` and `tiny_over` live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

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


def interrupted_buffer(tiny_over: list[str], out: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A buffer run killed just before it finalizes: 9 steps logged, a checkpoint at step 8."""
    from bnr.runs.writer import RunWriter

    argv = ["train-buffer", *tiny_over, f"buffer.out={out}", "buffer.train.epochs=3", "buffer.train.save_every=4"]

    def killed(self: RunWriter, *a: object, **k: object) -> Path:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(RunWriter, "finalize", killed)
        assert main(argv) == 130
    assert (Path(f"{out}.partial") / "checkpoints" / "last.pt").is_file()
    return argv
