"""Progress reporting: bars on a terminal, short log lines every N steps elsewhere, one switch for all loops."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bnr import progress
from bnr.progress import Progress, track
from conftest import tiny_overrides


@pytest.fixture(autouse=True)
def _restore_mode() -> Iterator[None]:
    saved = progress.current_mode()
    yield
    progress.configure(saved)


def test_log_mode_writes_one_short_line_every_n_steps(caplog: pytest.LogCaptureFixture) -> None:
    progress.configure("log")
    caplog.set_level(logging.INFO, logger="bnr.progress")
    with Progress(25, "train", every=10) as bar:
        for _ in range(25):
            bar.update(1, tokens=100, loss=0.5, lr=1e-4)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # steps 10, 20 and the last one
    assert lines[0].startswith("train step 10/25 (40%) loss 0.5 lr 1.00e-04")
    assert "tok/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("train step 25/25 (100%)")
    assert all(len(line) < 200 and "\r" not in line for line in lines)


def test_off_mode_and_track(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bnr.progress")
    progress.configure("off")
    assert list(track([1, 2, 3], "cells")) == [1, 2, 3]
    assert not caplog.records
    progress.configure("log")
    assert list(track([1, 2, 3], "cells", unit="cell")) == [1, 2, 3]
    assert [r.getMessage().split(" cell/s")[0] for r in caplog.records][-1] == "cells cell 3/3 (100%)"
    with pytest.raises(ValueError, match="progress mode"):
        progress.configure("loud")  # type: ignore[arg-type]


def test_bars_only_on_a_terminal_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            return len(s)

        def flush(self) -> None:
            pass

    progress.configure("auto")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not progress.bars_enabled()  # pytest captures stderr: not a terminal
    monkeypatch.setattr(sys, "stderr", Tty())
    assert progress.bars_enabled()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress.bars_enabled()
    progress.configure("bar")
    assert progress.bars_enabled()


def _finetune(tmp_path: Path, model: Path, data: dict[str, Path], *flags: str) -> str:
    over = [o for o in tiny_overrides(model, data, tmp_path) if "progress=" not in o and "log_every=" not in o]
    argv = [*flags, "finetune", *over, "user.defense=none", "user.train.log_every=2", f"user.out={tmp_path / 'u'}"]
    log_file = tmp_path / "log.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TQDM_DISABLE", None)
    with open(log_file, "w") as f:  # a file, as in `bnr ... 2>&1 | cat > log`: not a terminal
        proc = subprocess.run([sys.executable, "-m", "bnr", *argv], stdout=f, stderr=subprocess.STDOUT, env=env)
    text = log_file.read_text()
    assert proc.returncode == 0, text
    return text


def test_non_tty_log_has_short_loss_lines(tmp_path: Path, tiny_model_dir: Path, tiny_data: dict[str, Path]) -> None:
    text = _finetune(tmp_path, tiny_model_dir, tiny_data)
    lines = text.splitlines()
    assert "\r" not in text and max(len(line) for line in lines) < 300
    loss_lines = [line for line in lines if "user[sft] step" in line]
    assert len(loss_lines) >= 2 and all(" loss " in line and " lr " in line and "ETA" in line for line in loss_lines)
    assert "(100%)" in loss_lines[-1]


@pytest.mark.slow
def test_quiet_leaves_only_warnings(tmp_path: Path, tiny_model_dir: Path, tiny_data: dict[str, Path]) -> None:
    text = _finetune(tmp_path, tiny_model_dir, tiny_data, "--quiet")
    assert " step " not in text and " INFO " not in text


def test_a_bar_leaves_one_final_line(caplog: pytest.LogCaptureFixture) -> None:
    """On a terminal the bar vanishes when done (leave=False): the run still says where it ended."""
    progress.configure("bar")
    caplog.set_level(logging.INFO, logger="bnr.progress")
    with progress.Progress(3, "user", unit="step") as bar:
        for _ in range(3):
            bar.update(1, loss=0.25)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("user step 3/3 (100%) loss 0.25")
