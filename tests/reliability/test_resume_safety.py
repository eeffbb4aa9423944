"""Issue 21 section 4: a checkpoint never runs code and a bad one is one line; SIGTERM checkpoints like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_runs import child_env, cli, interrupted_buffer
from safetensors.torch import load_file

from bnr.cli import main


class _Planted:
    """Unpickling this runs a shell command (what a planted `last.pt` would do under weights_only=False)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _corrupt(case: str, ckpt: Path, marker: Path) -> None:
    data = ckpt.read_bytes()
    if case == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif case == "random bytes":
        ckpt.write_bytes(os.urandom(4096))
    elif case == "empty":
        ckpt.write_bytes(b"")
    elif case == "foreign":
        torch.save({"model": torch.zeros(3)}, ckpt)
    else:  # planted pickle, inside an otherwise valid-looking checkpoint
        torch.save({"step": 4, "params": {}, "optimizer": _Planted(marker), "scheduler": {}, "rng": {}}, ckpt)


@pytest.mark.parametrize("case", ["truncated", "random bytes", "empty", "foreign", "planted pickle"])
def test_bad_checkpoint_is_one_line_and_runs_no_code(
    case: str,
    tiny_over: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = interrupted_buffer(tiny_over, tmp_path / "b", monkeypatch)
    ckpt = Path(f"{tmp_path / 'b'}.partial") / "checkpoints" / "last.pt"
    marker = tmp_path / "pwned"
    _corrupt(case, ckpt, marker)
    if case == "planted pickle":  # the file really runs code when loaded the old way
        torch.load(ckpt, weights_only=False)
        assert marker.exists()
        marker.unlink()
    rc, line = cli([*argv, "resume=true"], capsys)
    assert rc == 2 and "unreadable" in line and "rerun without resume=true" in line, line
    assert not marker.exists()
    assert main(argv) == 0  # starting over works


def _train_argv(tiny_over: list[str], out: Path) -> list[str]:
    return ["train-buffer", *tiny_over, f"buffer.out={out}", "buffer.train.max_steps=400", "buffer.train.save_every=0"]


def test_sigterm_writes_a_checkpoint_and_the_resumed_run_is_exact(tiny_over: list[str], tmp_path: Path) -> None:
    """A real `bnr` process gets a real SIGTERM mid-training: it saves the step it finished, says how to resume,
    and the resumed run ends bitwise equal to an uninterrupted one."""
    out = tmp_path / "b"
    argv = _train_argv(tiny_over, out)
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:  # a file, not a pipe: a pipe nobody reads blocks the child once full
        proc = subprocess.Popen(
            [sys.executable, "-m", "bnr", *argv], stdout=subprocess.DEVNULL, stderr=stderr, env=child_env()
        )
    metrics = Path(f"{out}.partial") / "metrics.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if metrics.is_file() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal: " + log.read_text()[-500:]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = log.read_text()
    assert proc.returncode == 130, err[-800:]
    last = [line for line in err.splitlines() if line.startswith("bnr: interrupted")]
    assert last and "SIGTERM" in last[-1] and "resume=true" in last[-1] and "checkpoint of step" in last[-1], err
    assert (Path(f"{out}.partial") / "checkpoints" / "last.pt").is_file()
    assert main([*argv, "resume=true"]) == 0
    assert main(_train_argv(tiny_over, tmp_path / "whole")) == 0
    resumed, whole = (
        load_file(out / "adapter_model.safetensors"),
        load_file(tmp_path / "whole" / "adapter_model.safetensors"),
    )
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
