"""Issue 21 section 6: one writer per `out=`, a full disk is one line naming the file, file modes on purpose."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_runs import child_env, cli

from bnr.cli import main


def _limited(limit: int) -> None:
    """In the child: files may grow to `limit` bytes (a write past it fails with EFBIG; Python ignores SIGXFSZ)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize(
    ("writer", "limit", "extra", "names"),
    [
        pytest.param("yaml (config.yaml)", 4_000, [], "config.yaml", marks=pytest.mark.slow),
        ("safetensors (the adapter)", 12_000, [], "adapter_model.safetensors"),
        pytest.param(
            "torch (the checkpoint)", 40_000, ["buffer.train.save_every=1"], "last.pt", marks=pytest.mark.slow
        ),
    ],
)
def test_a_full_disk_is_one_line_naming_the_file(
    writer: str, limit: int, extra: list[str], names: str, tiny_over: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "b"
    argv = [sys.executable, "-m", "bnr", "train-buffer", *tiny_over, f"buffer.out={out}", *extra]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, preexec_fn=lambda: _limited(limit), env=child_env()
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bnr: error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(errors) == 1 and "cannot write" in errors[0] and names in errors[0], errors
    assert "File too large" in errors[0] and "free space" in errors[0]
    assert not out.exists() and not Path(f"{out}.partial").exists()


def test_the_write_sites_map_a_full_disk(tmp_path: Path) -> None:
    """JSON (atomic_write_json), safetensors (lora_files) and torch (save_checkpoint) under a 1 KB file-size limit."""
    code = """
import sys, torch
from pathlib import Path
from bnr.artifacts import atomic_write_json
from bnr.lora_files import _atomic_save_safetensors
from bnr.train import save_checkpoint
from bnr.errors import BnrError
d = Path(sys.argv[1])
model = torch.nn.Linear(64, 64)
opt = torch.optim.AdamW(model.parameters())
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
for what, write in [
    ("json", lambda: atomic_write_json(d / "big.json", {"x": "y" * 5000})),
    ("safetensors", lambda: _atomic_save_safetensors({"w": torch.zeros(4000)}, d / "w.safetensors")),
    ("torch", lambda: save_checkpoint(d / "last.pt", model, opt, sched, 1)),
]:
    try:
        write()
        print(what, "written")
    except BnrError as e:
        print(what, e)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: _limited(1024),
        env=child_env(),
    )
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert set(lines) == {"json", "safetensors", "torch"}, proc.stdout + proc.stderr[-2000:]
    for what, name in (("json", "big.json"), ("safetensors", "w.safetensors"), ("torch", "last.pt")):
        assert lines[what].startswith(f"cannot write '{tmp_path / name}'") and "File too large" in lines[what], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left behind


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """`bnr ARGV` in a child process, its stderr (a log line per step) into a file, never a pipe nobody reads."""
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "bnr", *argv], stdout=subprocess.DEVNULL, stderr=err, env=child_env()
        )


def _wait_for_steps(proc: subprocess.Popen[bytes], metrics: Path, steps: int, log: Path) -> None:
    # 300 s as the other waits here: on a loaded machine (load 6) the child's imports alone took over 120 s
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if metrics.is_file() and metrics.read_text().count("\n") >= steps:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run did not reach step {steps}: {log.read_text()[-2000:]}")


def test_a_second_run_on_the_same_out_refuses_and_the_first_completes(
    tiny_over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b"
    argv = ["train-buffer", *tiny_over, f"buffer.out={out}", "buffer.train.max_steps=60"]
    first = _start(argv, tmp_path / "first.log")
    _wait_for_steps(first, Path(f"{out}.partial") / "metrics.jsonl", 2, tmp_path / "first.log")
    first.send_signal(signal.SIGSTOP)  # paused mid-run, still holding its lock, however slow the second run starts
    try:
        for extra in ([], ["overwrite=true"], ["resume=true"]):
            rc, line = cli([*argv, *extra], capsys)
            assert rc == 2 and f"another bnr command (pid {first.pid}) is writing" in line, line
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    assert {"config.yaml", "metrics.jsonl", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert not (out / ".lock").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 60


def test_the_lock_of_a_dead_run_is_taken_over(tiny_over: list[str], tmp_path: Path) -> None:
    """A run killed with SIGKILL leaves its lock file; the kernel dropped the lock with the process."""
    out = tmp_path / "b"
    argv = ["train-buffer", *tiny_over, f"buffer.out={out}", "buffer.train.max_steps=60"]
    first = _start(argv, tmp_path / "first.log")
    _wait_for_steps(first, Path(f"{out}.partial") / "metrics.jsonl", 1, tmp_path / "first.log")
    first.kill()
    first.wait(timeout=60)
    lock = Path(f"{out}.partial") / ".lock"
    assert lock.read_text().strip() == str(first.pid)
    assert main([*argv, "buffer.train.max_steps=3"]) == 0


def _modes(root: Path) -> set[tuple[str, int]]:
    """{("file"|"dir", mode)} of root and everything below it."""
    paths = [root, *root.rglob("*")]
    return {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in paths}


def test_file_modes_deliverables_readable_buffer_and_registry_private(
    tiny_over: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the umask: a UserLoRA run (adapter, card) is 0644/0755 even under umask 077; the buffer run and its
    registry entry are 0600/0700 even under umask 022."""
    registry = tmp_path / "registry"
    monkeypatch.setenv("BNR_BUFFER_REGISTRY", str(registry))
    old = os.umask(0o022)
    try:
        assert main(["train-buffer", *tiny_over, f"buffer.out={tmp_path / 'buffer'}"]) == 0
        os.umask(0o077)
        assert main(["finetune", *tiny_over, "user.defense=none", f"user.out={tmp_path / 'user'}"]) == 0
    finally:
        os.umask(old)
    assert _modes(tmp_path / "buffer") == {("dir", 0o700), ("file", 0o600)}
    assert _modes(registry) == {("dir", 0o700), ("file", 0o600)}
    user = _modes(tmp_path / "user")
    assert user == {("dir", 0o755), ("file", 0o644)}, user
    assert (tmp_path / "user" / "adapter_model.safetensors").stat().st_mode & 0o777 == 0o644
