"""Content hashes of weight files, computed once per file version.

A base model is identified by what its weights hold, not by their names and sizes: a folder whose weights were
edited in place (the buffer merged in, saved with the same sizes) is another base. Hashing a multi-GB checkpoint
takes a while, so each file's sha256 is cached by (resolved path, size, mtime_ns, ctime_ns, inode), in memory and in
`$BNR_CACHE/file-hashes.json`: the first run on a base reads it once, later runs and processes reuse the hash, and
rewriting the file (a new mtime or size) invalidates it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth")
CACHE_FILE = "file-hashes.json"

_MEMORY: dict[str, str] = {}


def bnr_cache() -> Path:
    """bnr's cache folder on this machine: $BNR_CACHE, else ~/.cache/bnr (file hashes, built toy bases, converted
    GGUF bases, the buffer registry)."""
    return Path(os.environ.get("BNR_CACHE", Path.home() / ".cache" / "bnr")).expanduser()


def cache_path() -> Path:
    """Where the hashes are cached across processes: $BNR_CACHE (or ~/.cache/bnr) / file-hashes.json."""
    return bnr_cache() / CACHE_FILE


def _stamp(path: Path) -> str:
    # ctime and inode too: `os.utime` can put an edited file's mtime back, never its ctime
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}  # absent or damaged: a cache only, the hashes are recomputed
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_cache(entries: dict[str, str]) -> None:
    from bnr.artifacts import atomic_write_json

    try:
        atomic_write_json(cache_path(), _read_cache() | entries)
    except OSError as e:  # a read-only cache folder costs time, not correctness
        log.debug("cannot write the file-hash cache %s: %s", cache_path(), e)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (hex), cached by its resolved path, size, mtime, ctime and inode."""
    p = Path(path)
    stamp = _stamp(p)
    if stamp in _MEMORY:
        return _MEMORY[stamp]
    digest = _read_cache().get(stamp)
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if _stamp(p) == stamp:  # not rewritten while it was read
            _write_cache({stamp: digest})
    _MEMORY[stamp] = digest
    return digest


def weight_hashes(folder: str | Path) -> dict[str, str]:
    """{file name: sha256} of the weight files directly in a model folder, sorted by name."""
    p = Path(folder)
    return {f.name: file_sha256(f) for f in sorted(p.iterdir()) if f.suffix in WEIGHT_SUFFIXES and f.is_file()}
