"""The store directory: uploaded files and released adapters namespaced by organization, provider artifacts apart.

    <store>/orgs/<org>/files/<file id>.jsonl     what a tenant uploaded (after validation)
    <store>/orgs/<org>/jobs/<job id>/            a job's working runs (UserLoRA, checkpoints; never served)
    <store>/orgs/<org>/models/<job id>/          a released deliverable: a PEFT folder with its card
    <store>/bases/<base>/                        provider artifacts (buffer, reinforce, ...; never served)
    <store>/tmp/                                 uploads in flight (cleared at start)

Every path the API hands out is computed from ids the database holds; a client never names a path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def org_dir(store: Path, org_id: str) -> Path:
    return store / "orgs" / org_id


def file_path(store: Path, org_id: str, file_id: str) -> Path:
    return org_dir(store, org_id) / "files" / f"{file_id}.jsonl"


def job_dir(store: Path, org_id: str, job_id: str) -> Path:
    return org_dir(store, org_id) / "jobs" / job_id


def model_dir(store: Path, org_id: str, job_id: str) -> Path:
    return org_dir(store, org_id) / "models" / job_id


def base_dir(store: Path, base: str) -> Path:
    return store / "bases" / base


def tmp_dir(store: Path) -> Path:
    path = store / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def registry_dir(store: Path) -> Path:
    """The provider's buffer registry for this service (what the guard compares every release with)."""
    return store / "registry" / "buffers"


def use_registry(store: Path) -> None:
    """Point bnr's buffer guard at the service's registry unless the provider set one explicitly."""
    os.environ.setdefault("BNR_BUFFER_REGISTRY", str(registry_dir(store)))


def clear_tmp(store: Path) -> None:
    """Uploads that a killed server left half-written: never recorded in the database, so they go."""
    shutil.rmtree(store / "tmp", ignore_errors=True)
    tmp_dir(store)


def publish(tmp: Path, final: Path) -> None:
    """Move a complete file into place (same filesystem: an atomic rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
