"""Run directories: the interface between stages.

A run directory holds the stage's adapter in standard PEFT format at its root (so
`PeftModel.from_pretrained(run_dir)` and `bnr merge user=RUN_DIR` work on it), the resolved
`config.yaml`, `metrics.jsonl` and `manifest.json` (provenance). It is written under
`<out>.partial/` and renamed into place only when complete, so a crash never leaves a directory that
looks complete; training checkpoints live in `<out>.partial/checkpoints/` so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bnr.diskfull import writing
from bnr.errors import BnrError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ADAPTER_CONFIG = "adapter_config.json"  # a PEFT adapter at the run root
FULL_MODEL_DIR = "full_model"  # a merge run's full merged model, on request
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
PARTIAL_SUFFIX = ".partial"


def umask_mode() -> int:
    """The mode a new file gets from `open()` under the current umask (what `save_pretrained` files get)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_file_beside(path: Path) -> tuple[int, str]:
    """(fd, name) of a new temporary file next to `path`, with normal permissions (mkstemp's are 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, umask_mode())
    return fd, tmp


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    try:
        with writing(path), os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_folder(tmp: Path, out: Path) -> None:
    """Move a finished build folder `tmp` to `out` in one rename; if another process finished first, keep theirs."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(tmp)
        return
    try:
        os.replace(tmp, out)
    except OSError:  # another process published between the check and the rename: theirs is the same build
        if not out.exists():
            raise
        shutil.rmtree(tmp)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_json(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable object (sorted keys)."""
    return hash_bytes(json.dumps(obj, sort_keys=True, default=str).encode())[:16]


def hash_files(paths: Iterable[Path]) -> str:
    """sha256 over the contents of files (in the given order)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


# the files a run's content hash covers: its weights and their configs (a run without them, an evaluation,
# is identified by its manifest)
CONTENT_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "config.json",
    "model.safetensors",
    "alignment.safetensors",
)


def weights_hash(folder: str | Path) -> str | None:
    """sha256 of a run folder's `CONTENT_FILES` (None if it holds none of them)."""
    files = [Path(folder) / f for f in CONTENT_FILES if (Path(folder) / f).is_file()]
    return hash_files(files) if files else None


def content_hash(run: str | Path) -> str:
    """The content hash of a run directory: recorded in its manifest (or, by an older bnr, in `stage.json`), else
    sha256 of its weight files, else of its manifest."""
    path = Path(run)
    for name in (MANIFEST, "stage.json"):
        try:
            recorded = json.loads((path / name).read_text()).get("content_hash")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded:
            return str(recorded)
    return weights_hash(path) or hash_files([path / MANIFEST])


def library_versions() -> dict[str, str]:
    """Versions of bnr and the libraries that decide numerical results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("bnr", "torch", "transformers", "peft", "accelerate", "safetensors", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def is_complete(path: str | Path) -> bool:
    p = Path(path) / MANIFEST
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("status") == "complete"
    except (OSError, json.JSONDecodeError):
        return False


def read_manifest(path: str | Path, *, expect_stage: str | None = None) -> dict[str, Any]:
    """Read the manifest of a complete run directory, or raise a `BnrError` naming the fix."""
    p = Path(path)
    if not p.exists():
        partial = Path(str(p) + PARTIAL_SUFFIX)
        hint = " (an unfinished run exists beside it: rerun that stage with resume=true)" if partial.exists() else ""
        raise BnrError(f"missing parent run {str(p)!r}{hint}; run that stage first or fix the path")
    if not is_complete(p):
        raise BnrError(
            f"{str(p)!r} is not a complete bnr run (no complete manifest.json); rerun the stage that makes it"
        )
    manifest: dict[str, Any] = json.loads((p / MANIFEST).read_text())
    if expect_stage is not None and manifest.get("stage") != expect_stage:
        raise BnrError(
            f"{str(p)!r} is a {manifest.get('stage')!r} run, expected a {expect_stage!r} run; point to the right run"
        )
    return manifest


# a parent whose folder shares an ancestor with the run at most this many levels above the run's folder is in the
# same runs tree (a pipeline's or sweep's output folder): its manifest records it relative to the run
SAME_TREE_UP = 3


def path_in_tree(path: str | Path, home: str | Path) -> str:
    """How a file in the folder `home` records the folder `path`: relative to `home` when both lie in the same runs
    tree (a common ancestor at most `SAME_TREE_UP` levels above `home`), so a tree copied or shared names no path
    of this machine; else absolute. `path_from` reads it back."""
    target, here = Path(os.path.abspath(path)), Path(home).resolve()
    rel = Path(os.path.relpath(target, here))
    ups = sum(part == ".." for part in rel.parts)
    if ups <= SAME_TREE_UP and len(Path(os.path.commonpath([target, here])).parts) > 1:
        return rel.as_posix()
    return str(path) if Path(path).is_absolute() else str(target)


def path_from(recorded: str | Path, home: str | Path) -> Path:
    """A path recorded by `path_in_tree` in a file of the folder `home`, read against `home` (an absolute one,
    as older files hold, is read as it is)."""
    return Path(os.path.normpath(Path(home) / recorded))


def relative_parents(manifest: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """`manifest` with each parent's `path` relative to the run folder `out` when both lie in the same runs tree
    (`path_in_tree`), so a run copied or shared with its tree names no path of this machine; others stay absolute."""
    parents = [
        {**parent, "path": path_in_tree(parent["path"], out)} if Path(parent["path"]).is_absolute() else parent
        for parent in manifest.get("parents", [])
    ]
    return {**manifest, "parents": parents} if "parents" in manifest else manifest


def parent_path(manifest: dict[str, Any], stage: str, run_dir: str | Path) -> Path | None:
    """The folder of the run's parent `stage` (None without one); a relative path is read against `run_dir`, the
    run's own folder (older manifests record absolute paths, read as they are)."""
    for parent in manifest.get("parents", []):  # `role`; manifests of an older bnr name it `stage`
        if parent.get("role", parent.get("stage")) == stage and parent.get("path"):
            return path_from(parent["path"], run_dir)
    return None


def contains_buffer(path: str | Path) -> bool:
    """True if `path` is (or was merged with) a BufferLoRA according to its manifest."""
    p = Path(path) / MANIFEST
    if not p.is_file():
        return False
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError:
        return False
    return bool(m.get("contains_buffer")) or m.get("stage") == "buffer"


def assert_no_buffer(path: str | Path, what: str = "this export") -> None:
    """Refuse an artifact that is or contains the BufferLoRA (a jailbreak that must never leave the provider)."""
    if contains_buffer(path):
        raise BnrError(
            f"{str(path)!r} is or contains the BufferLoRA (a jailbreak adapter); {what} refuses it. "
            "Use the UserLoRA / ReinforceLoRA runs instead"
        )
