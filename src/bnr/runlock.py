"""One writer per run folder: an exclusive lock file in `<out>.partial/`.

Two commands with the same `out=` used to both run, the second wiping the first's partial folder, and both
exited 0 with a survivor missing files. The first takes an `fcntl.flock` on `<out>.partial/.lock` (with its pid
in the file, for the message); the second refuses in one line. The kernel drops the lock when its process dies,
so the lock file of a killed run is no lock at all: the next run takes it over.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bnr.errors import BnrError

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive, non-blocking lock on a run's partial folder, held until `release` (or the process ends)."""

    def __init__(self, folder: Path, out: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            self.fd = None
            raise BnrError(
                f"another bnr command (pid {holder}) is writing out={str(out)!r} right now; wait for it to finish "
                "or choose another out="
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Remove the lock file and drop the lock (before the folder is renamed into place or deleted)."""
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
