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
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from bnr import provenance
from bnr.errors import BnrError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
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
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if isinstance(rec, dict):
            out.append(rec)
    return out


_OPEN: list[RunWriter] = []  # runs this process has opened and not finalized (see `discard_unstarted`)


def discard_unstarted() -> None:
    """After a run failed with an error: drop the partial folders of the runs it left open that hold no checkpoint
    (nothing to resume), so a refused run leaves nothing behind. Partial folders with checkpoints stay, for
    `resume=true`."""
    for writer in _OPEN:
        ckpt = writer.checkpoint_dir
        if writer.main and writer.partial.is_dir() and not (ckpt.is_dir() and any(ckpt.iterdir())):
            shutil.rmtree(writer.partial, ignore_errors=True)
    _OPEN.clear()


# When the stage began, if before its run folder was opened: a finalize hook computes its deliverable (pruning,
# projection, a calibration search) and only then opens the writer, whose `wall_time_s` should still cover the
# whole stage (`stage_clock`).
STAGE_STARTED: ContextVar[float | None] = ContextVar("bnr_stage_started", default=None)


@contextmanager
def stage_clock() -> Iterator[None]:
    """Run folders opened inside the block record their wall time from the block's start."""
    token = STAGE_STARTED.set(time.time())
    try:
        yield
    finally:
        STAGE_STARTED.reset(token)


class RunWriter:
    """Writes one run directory atomically.

    Everything goes into `<out>.partial/`; `finalize()` writes the manifest last and renames the folder
    to `<out>`. An existing complete run is refused unless `overwrite`; an existing partial folder is
    reused when `resume` (its checkpoints are picked up) and cleared otherwise.

    In a launched job (`bnr.distributed`) rank 0 alone writes the run: on the other ranks `tmp` is a private
    scratch folder (what a recipe saves there is dropped at `finalize`), while `checkpoint_dir` is rank 0's, so
    every rank resumes from the same checkpoint. `finalize` returns on every rank once the run is in place.
    """

    def __init__(self, out: str | Path, stage: str, *, overwrite: bool = False, resume: bool = False) -> None:
        from bnr import distributed

        self.out = Path(out)
        self.stage = stage
        self.overwrite = overwrite
        self.partial = Path(str(self.out) + PARTIAL_SUFFIX)
        self.main = distributed.is_main()
        self._check_out(overwrite)
        if self.main:
            if self.partial.exists() and not resume:
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True, exist_ok=True)
            self.tmp = self.partial
        else:
            self.tmp = Path(tempfile.mkdtemp(prefix=f"bnr-rank{distributed.rank()}-{self.out.name}-"))
        self.started = STAGE_STARTED.get() or time.time()
        self._last_step: dict[str, int] | None = None
        _OPEN.append(self)

    def _check_out(self, overwrite: bool) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise BnrError(f"out={str(self.out)!r} is a file, not a run folder; choose another out=")
        for parent in self.out.parents:
            if parent.is_file():
                raise BnrError(f"out={str(self.out)!r} is inside the file {str(parent)!r}; choose another out=")
        if self.out.exists():
            if is_complete(self.out) and not overwrite:
                raise BnrError(
                    f"{str(self.out)!r} already holds a complete run; pass overwrite=true or choose another out="
                )
            if not is_complete(self.out) and any(self.out.iterdir()) and not overwrite:
                raise BnrError(
                    f"{str(self.out)!r} exists and is not a bnr run; choose another out= or pass overwrite=true"
                )

    @property
    def checkpoint_dir(self) -> Path:
        return self.partial / "checkpoints"

    def write_config(self, config_yaml: str) -> None:
        atomic_write_text(self.tmp / CONFIG, config_yaml)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl; a resumed stage replaces the records it logs again.

        Steps logged after the last checkpoint of an interrupted run are redone on resume: the earlier records
        of that stage from this step on are dropped first, so no step appears twice.
        """
        path = self.tmp / METRICS
        stage, step = record.get("stage"), record.get("step")
        if isinstance(step, int) and isinstance(stage, str):
            last = self._logged_steps(path)
            if step <= last.get(stage, 0):
                self._drop_from(path, stage, step)
            last[stage] = step
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def _logged_steps(self, path: Path) -> dict[str, int]:
        if self._last_step is None:
            self._last_step = {}
            for rec in _read_jsonl(path):
                if isinstance(rec.get("step"), int) and isinstance(rec.get("stage"), str):
                    self._last_step[rec["stage"]] = max(self._last_step.get(rec["stage"], 0), rec["step"])
        return self._last_step

    @staticmethod
    def _drop_from(path: Path, stage: str, step: int) -> None:
        keep = [r for r in _read_jsonl(path) if not (r.get("stage") == stage and int(r.get("step") or 0) >= step)]
        atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in keep))

    def finalize(self, manifest: dict[str, Any], *, keep_checkpoints: bool = False) -> Path:
        """Write the manifest and move the run into place. Returns the final path (on every rank, once it is there)."""
        from bnr import distributed

        if self.main:
            self._finalize(manifest, keep_checkpoints)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self in _OPEN:
            _OPEN.remove(self)
        distributed.barrier()
        return self.out

    def _finalize(self, manifest: dict[str, Any], keep_checkpoints: bool) -> None:
        if not keep_checkpoints and self.checkpoint_dir.exists():
            shutil.rmtree(self.checkpoint_dir)
        manifest = {
            "stage": self.stage,
            **manifest,
            "status": "complete",
            "wall_time_s": round(time.time() - self.started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": library_versions(),
            "source": provenance.source(),
            "command": provenance.command_line(),
        }
        from bnr.cards import lora_summary, write_cards  # cards render from artifacts; imported late (a cycle)

        lora = lora_summary(self.tmp)
        if lora:
            manifest["lora"] = lora
        write_cards(self.tmp, manifest, location=self.out)
        atomic_write_json(self.tmp / MANIFEST, manifest)
        if self.out.exists():
            old = Path(str(self.out) + ".old")
            if old.exists():
                shutil.rmtree(old)
            # the old run stops looking complete before it moves aside, so a kill here never leaves a
            # complete-looking `<out>.old` (or two complete runs)
            if (self.out / MANIFEST).is_file():
                os.replace(self.out / MANIFEST, self.out / f".{MANIFEST}.replaced")
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old)
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp, self.out)
        log.info("wrote %s run to %s", self.stage, self.out)

    def abort(self) -> None:
        """Remove the partial folder (used when the failure leaves nothing worth resuming)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
