"""Where a result came from: the bnr source revision (the git commit when bnr runs from a checkout, else the
installed package version) and the command line that made it. Every run manifest records both."""

from __future__ import annotations

import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

_command: list[str] = []


def set_command(argv: list[str]) -> None:
    """Record the `bnr ...` command this process runs (the CLI calls it; the Python API leaves `sys.argv`)."""
    _command[:] = argv


def command_line() -> str:
    """The command that made this run, shell-quoted: `bnr ...` from the CLI, else the Python process's argv."""
    return shlex.join(_command or [Path(sys.argv[0]).name, *sys.argv[1:]])


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def source() -> dict[str, Any]:
    """{"version": bnr's version, "commit": HEAD of the checkout bnr is imported from (None when installed from a
    package), "dirty": whether that checkout has uncommitted changes to tracked files}."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("bnr")
    except PackageNotFoundError:
        pkg = "unknown"
    root = Path(__file__).resolve().parents[2]  # src/bnr/provenance.py -> the checkout
    commit = _git(root, "rev-parse", "HEAD") if (root / ".git").exists() else None
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"version": pkg, "commit": commit, "dirty": dirty}


@lru_cache(maxsize=1)
def cpu_kind() -> str:
    """The kind of CPU that float results depend on: vendor, family and model (/proc/cpuinfo; else what `platform`
    knows) and the instruction set torch's CPU kernels dispatch to. The same seed gives bit-for-bit equal runs on
    one kind; another kind's kernels may round differently in the last bits (and a greedy answer with them)."""
    import platform

    import torch

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    if "vendor_id" in fields:
        name = f"{fields['vendor_id']} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
    else:
        name = platform.processor() or platform.machine()
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"
