"""A full disk (or a quota, or a file-size limit) is one line naming the file, not a library's traceback.

The libraries that write bnr's files report it in their own ways: Python's `OSError` (ENOSPC, EDQUOT, EFBIG),
safetensors' `SafetensorError: ... No space left on device (os error 28)`, torch's `RuntimeError: ... unexpected
pos` with the `OSError` as its context when given a file object. `writing(path)` maps all of them to a `BnrError`
at the write sites; `disk_full_reason` lets the CLI catch what a library wrote elsewhere.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bnr.errors import BnrError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_MESSAGES = {
    "os error 28": os.strerror(errno.ENOSPC),
    "os error 122": os.strerror(errno.EDQUOT),
    "os error 27": os.strerror(errno.EFBIG),
    "no space left on device": os.strerror(errno.ENOSPC),
    "disk quota exceeded": os.strerror(errno.EDQUOT),
    "file too large": os.strerror(errno.EFBIG),
}


class DiskFullError(BnrError):
    """A write failed because the disk is full, over quota, or the file is over the process's size limit."""


def disk_full_reason(exc: BaseException) -> str | None:
    """The OS's words (e.g. "No space left on device") when `exc` or an exception it chains is a full disk."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return os.strerror(e.errno)
        text = str(e).lower()
        for needle, words in _MESSAGES.items():
            if needle in text:
                return words
        e = e.__cause__ or e.__context__
    return None


def disk_full_message(path: str | Path | None, reason: str) -> str:
    where = f"cannot write {str(path)!r}" if path else "cannot write a file"
    return f"{where}: {reason} (a full disk, a quota or a file-size limit); free space and rerun the command"


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a full-disk failure inside the block into a one-line `DiskFullError` naming `path`."""
    try:
        yield
    except BnrError:
        raise
    except Exception as e:
        reason = disk_full_reason(e)
        if reason is None:
            raise
        raise DiskFullError(disk_full_message(path, reason)) from None
