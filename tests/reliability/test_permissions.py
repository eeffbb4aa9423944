"""Section 6: run files get normal permissions; unreadable / unwritable paths are one-line errors; no noise."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from bnr.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_run_files_respect_umask(stage_runs: dict[str, Path], tmp_path: Path, umask_022: None) -> None:
    out = tmp_path / "m"
    assert main(["merge", f"user={stage_runs['user']}", f"reinforce={stage_runs['reinforce']}", f"out={out}"]) == 0
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir() if f.is_file()}
    assert "adapter_model.safetensors" in modes and "manifest.json" in modes
    assert all(m == 0o644 for m in modes.values()), modes


def test_no_peft_rename_warning_and_no_loading_bars(
    tiny_over: list[str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train-buffer", *tiny_over, f"buffer.out={tmp_path / 'b'}"]) == 0
    assert not [w for w in caught if "renamed" in str(w.message)]
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "renamed" not in err


def _as_nobody() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pw = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _run_as(ids: tuple[int, int], argv: list[str], registry: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BNR_BUFFER_REGISTRY=str(registry), PYTHONPATH=str(ROOT / "src"), HOME=str(registry))

    def drop() -> None:
        os.setgid(ids[1])
        os.setuid(ids[0])

    cmd = [sys.executable, "-m", "bnr.cli", *argv] if argv else [sys.executable, "-c", "import bnr.cli, torch"]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=drop, timeout=300)
    except PermissionError as e:  # the interpreter itself is not executable for that user
        return subprocess.CompletedProcess(cmd, 126, "", str(e))


@pytest.mark.slow
def test_unreadable_input_and_unwritable_output_for_a_non_root_user(stage_runs: dict[str, Path]) -> None:
    ids = _as_nobody()
    if ids is None:
        pytest.skip("needs root and a 'nobody' user to drop privileges")
    base = Path(tempfile.mkdtemp(prefix="bnr-perm-"))
    try:
        os.chmod(base, 0o755)
        registry = base / "registry"
        registry.mkdir()
        os.chmod(registry, 0o777)
        user, reinforce = base / "user", base / "reinforce"
        shutil.copytree(stage_runs["user"], user)
        shutil.copytree(stage_runs["reinforce"], reinforce)
        for d in (user, reinforce):
            os.chmod(d, 0o755)
            for f in d.iterdir():
                os.chmod(f, 0o644)
        if _run_as(ids, [], registry).returncode != 0:
            pytest.skip("'nobody' cannot run this Python environment (its files are private)")
        (user / "adapter_model.safetensors").chmod(0o600)  # root's file: nobody cannot read it
        r = _run_as(
            ids, ["merge", f"user={user}", f"reinforce={reinforce}", f"out={base / 'writable' / 'm'}"], registry
        )
        assert r.returncode == 2 and "Permission denied" in r.stderr and "Traceback" not in r.stderr, r.stderr
        (user / "adapter_model.safetensors").chmod(0o644)
        r = _run_as(ids, ["merge", f"user={user}", f"reinforce={reinforce}", f"out={base / 'm'}"], registry)
        assert r.returncode == 2 and "Permission denied" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("bnr: error:")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("errno_", [13, 30, 28])
def test_os_errors_on_user_paths_are_one_line(
    errno_: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Permission denied, read-only file system, disk full: `bnr: error:` naming the path, exit code 2."""
    import bnr.recipes.validate as validate

    def denied(cfg: object) -> None:
        raise OSError(errno_, os.strerror(errno_), "/some/run/manifest.json")

    monkeypatch.setattr(validate, "run", denied)
    assert main(["validate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bnr: error: cannot access '/some/run/manifest.json'")
