"""The run writer: one run directory written atomically (`<out>.partial/` renamed into place when complete),
its metrics log, its checkpoints folder for resume, and the stage clock.

The files a run directory holds, and the helpers that read them, are in `bnr.artifacts` (a component that
evaluation and export code reads); this module writes them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from bnr import provenance
from bnr.artifacts import (
    CONFIG,
    MANIFEST,
    METRICS,
    PARTIAL_SUFFIX,
    atomic_write_json,
    atomic_write_text,
    content_hash,
    hash_json,
    is_complete,
    library_versions,
    relative_parents,
    weights_hash,
)
from bnr.diskfull import writing
from bnr.errors import BnrError
from bnr.filemodes import PRIVATE, make_deliverable, make_private
from bnr.runlock import LOCK_FILE, RunLock

log = logging.getLogger(__name__)


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


def _written_by_bnr(folder: Path) -> bool:
    """Whether `folder` holds a run directory bnr wrote: its manifest.json (or the one an interrupted overwrite
    set aside) is a JSON object naming a stage."""
    for name in (MANIFEST, f".{MANIFEST}.replaced"):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("stage"), str):
            return True
    return False


def _clear_except(folder: Path, keep: str) -> None:
    for child in folder.iterdir():
        if child.name == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


_OPEN: list[RunWriter] = []  # runs this process has opened and not finalized (see `discard_unstarted`)


def discard_unstarted() -> None:
    """After a run failed with an error: drop the partial folders of the runs it left open that hold no checkpoint
    (nothing to resume), so a refused run leaves nothing behind. Partial folders with checkpoints stay, for
    `resume=true`."""
    for writer in _OPEN:
        ckpt = writer.checkpoint_dir
        if writer.main and writer.partial.is_dir() and not (ckpt.is_dir() and any(ckpt.iterdir())):
            shutil.rmtree(writer.partial, ignore_errors=True)
        if writer.lock is not None:
            writer.lock.release()
    _OPEN.clear()


def _drop_stale_writers(partial: Path) -> None:
    """A writer of this process left open on the same folder (an exception ended its stage, and the Python API or
    a test runs it again): its stage is over, so it gives up its lock instead of refusing its own rerun."""
    for writer in [w for w in _OPEN if w.partial == partial]:
        if writer.lock is not None:
            writer.lock.release()
        _OPEN.remove(writer)


def release_locks() -> None:
    """When a command ends, however it ends: drop the locks of the runs it left open (their partial folders stay
    for `resume=true`), so a later command in the same process (the Python API, tests) can take them."""
    for writer in _OPEN:
        if writer.lock is not None:
            writer.lock.release()
    _OPEN.clear()


def _with_content_hash(parent: dict[str, Any]) -> dict[str, Any]:
    """A parent entry ({role, path}) with the parent's content hash (a run directory's, or an adapter folder's)."""
    path = Path(parent.get("path") or "")
    if "content_hash" in parent or not parent.get("path") or not path.is_dir():
        return parent
    digest = content_hash(path) if (path / MANIFEST).is_file() else weights_hash(path)
    return {**parent, "content_hash": digest} if digest else parent


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


# Stage keys for runs about to be opened, by output folder: an orchestrator that knows a stage's key (the
# finalize of a user job, a reused-or-built stage) sets it around code that opens the run (`keyed`).
_KEYS: ContextVar[dict[str, str] | None] = ContextVar("bnr_stage_keys", default=None)


def _where(out: str | Path) -> str:
    return os.path.abspath(out)


@contextmanager
def _set_key(entry: str, key: str) -> Iterator[None]:
    token = _KEYS.set({**(_KEYS.get() or {}), entry: key})
    try:
        yield
    finally:
        _KEYS.reset(token)


def keyed(out: str | Path, key: str) -> AbstractContextManager[None]:
    """The run opened at `out` inside the block records stage key `key` (a `bnr.runs.keys.StageKey`)."""
    return _set_key(_where(out), key)


def keyed_stage(stage: str, key: str) -> AbstractContextManager[None]:
    """The run of stage `stage` opened inside the block records stage key `key`, unless a key was set for its
    folder (`keyed`): a provider's build opens its run where its config says."""
    return _set_key(f"stage:{stage}", key)


def key_for(out: str | Path) -> str | None:
    """The stage key set for a run at `out` by `keyed`, if any."""
    return (_KEYS.get() or {}).get(_where(out))


class RunWriter:
    """Writes one run directory atomically.

    Everything goes into `<out>.partial/`; `finalize()` writes the manifest last and renames the folder
    to `<out>`. An existing complete run is refused unless `overwrite`; an existing partial folder is
    reused when `resume` (its checkpoints are picked up) and cleared otherwise.

    In a launched job (`bnr.distributed`) rank 0 alone writes the run: on the other ranks `tmp` is a private
    scratch folder (what a recipe saves there is dropped at `finalize`), while `checkpoint_dir` is rank 0's, so
    every rank resumes from the same checkpoint. `finalize` returns on every rank once the run is in place.

    `key` is the run's stage key (`bnr.runs.keys`), recorded in its manifest; a key set for `out` by `keyed`
    takes precedence.
    """

    def __init__(
        self, out: str | Path, stage: str, *, overwrite: bool = False, resume: bool = False, key: str | None = None
    ) -> None:
        from bnr import distributed

        self.out = Path(out)
        self.stage = stage
        keys = _KEYS.get() or {}
        self.key = keys.get(_where(out)) or keys.get(f"stage:{stage}") or key
        self.overwrite = overwrite
        self.partial = Path(str(self.out) + PARTIAL_SUFFIX)
        self.main = distributed.is_main()
        self._check_out(overwrite)
        self.lock: RunLock | None = None
        if self.main:
            self.partial.mkdir(parents=True, exist_ok=True)
            if stage == "buffer":  # its checkpoints hold the buffer too
                os.chmod(self.partial, PRIVATE[1])
            _drop_stale_writers(self.partial)
            self.lock = RunLock(self.partial, self.out)  # a second command on the same out= stops here
            if not resume:
                _clear_except(self.partial, LOCK_FILE)
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
            if not _written_by_bnr(self.out) and any(self.out.iterdir()):
                # overwrite=true replaces a run, never a folder bnr did not write (a home folder, a dataset, ...)
                raise BnrError(
                    f"{str(self.out)!r} exists and is not a bnr run (no bnr manifest.json); bnr never deletes it, "
                    "even with overwrite=true: choose another out= or empty it yourself"
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
        with writing(path), open(path, "a", encoding="utf-8") as f:
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
        parents = [_with_content_hash(p) for p in manifest.get("parents", [])]
        manifest = {
            "stage": self.stage,
            **relative_parents({**manifest, "parents": parents} if "parents" in manifest else manifest, self.out),
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
        if self.key is not None:
            manifest["key"] = str(self.key)
            manifest["key_inputs"] = getattr(self.key, "inputs", None)
        manifest["content_hash"] = weights_hash(self.tmp) or hash_json(manifest)
        atomic_write_json(self.tmp / MANIFEST, manifest)
        if self.lock is not None:
            self.lock.release()
        private = self.stage == "buffer" or bool(manifest.get("contains_buffer"))
        (make_private if private else make_deliverable)(self.tmp)
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
