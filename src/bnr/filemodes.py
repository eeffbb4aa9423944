"""File modes on purpose, whatever the umask and the libraries do.

safetensors writes its files 0600 and `tempfile` does too, so deliverables came out unreadable to a serving
account while the docs promised 0644. Now a finished run is set explicitly:

- deliverables (every run that is not the buffer: adapters, merged full models, cards, eval results): files 0644,
  folders 0755, readable by the account that serves them;
- the BufferLoRA's runs (and their partial folders with checkpoints) and the buffer registry: files 0600, folders
  0700, readable by the provider's own account only (the buffer is a jailbreak).
"""

from __future__ import annotations

import os
from pathlib import Path

DELIVERABLE = (0o644, 0o755)
PRIVATE = (0o600, 0o700)


def set_modes(root: Path, modes: tuple[int, int]) -> None:
    """Give `root`, every folder below it and every file in them the (file, folder) modes; links are left alone."""
    file_mode, dir_mode = modes
    os.chmod(root, dir_mode)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(folder) / name
            if not path.is_symlink():
                os.chmod(path, dir_mode)
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                os.chmod(path, file_mode)


def make_private(root: Path) -> None:
    """Files 0600 and folders 0700 under `root` (the buffer's runs, the registry)."""
    set_modes(root, PRIVATE)


def make_deliverable(root: Path) -> None:
    """Files 0644 and folders 0755 under `root` (what a serving account reads)."""
    set_modes(root, DELIVERABLE)
