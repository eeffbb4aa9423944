"""A job's files checked by bnr's data layer: at upload (`validate_file`), and again when a worker takes a job out of
`validating_files` (`check_job_files`): the stored bytes must still be the upload's (sha256) and still read as
training records, and a validation file must give every record a gold answer (FA scores against it).

A job that fails the check ends `failed` with an OpenAI-shaped error naming the file, the line and the reason
(`invalid_training_file` / `invalid_validation_file`); one that passes moves to `queued`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from bnr.errors import BnrError
from bnr.service import events
from bnr.service.db import File, Job, is_postgres, session

VALIDATING = "validating_files"


def validate_file(path: Path, filename: str) -> tuple[str, str | None, int, bool]:
    """(status, details, records, labelled) of an uploaded training file, checked by bnr's data layer; `labelled`:
    every record carries a `label` column."""
    from bnr.data.records import load_file

    try:
        records = load_file(path)
    except BnrError as e:
        return "error", str(e).replace(str(path), filename), 0, False
    return "processed", None, len(records), all(r.label is not None for r in records)


def check_file(root: Path, row: File, param: str) -> str | None:
    """None when the stored file of `row` is intact and reads as records; else the one-line reason."""
    from bnr.filehash import file_sha256

    path = root / row.path
    where = f"{param} {row.id} ({row.filename})"
    if not path.is_file():
        return f"{where} is missing from the store; upload it again"
    status, details, n, _ = validate_file(path, row.filename)
    if status != "processed":
        return f"{where}: {details}"
    if file_sha256(path) != row.sha256 or n != row.records:
        return f"{where} changed in the store since it was uploaded (sha256 differs); upload it again"
    return None


def check_job_files(root: Path, job: Job, files: dict[str, File]) -> dict[str, Any] | None:
    """The job's error object when its training or validation file fails the check, else None."""
    for param in ("training_file", "validation_file"):
        file_id = getattr(job, param)
        if not file_id:
            continue
        row = files.get(file_id)
        reason = check_file(root, row, param) if row is not None else f"{param} {file_id} no longer exists"
        if reason is not None:
            code = "invalid_training_file" if param == "training_file" else "invalid_validation_file"
            return {"code": code, "message": reason, "param": param}
    return None


def validate_next(engine: Engine, root: Path) -> str | None:
    """Check the files of the oldest job in `validating_files`, then queue it or fail it; its id, or None if none
    waits. The check runs outside any transaction; the transition happens only if the job is still validating
    (a cancel in between wins), so two workers checking the same job move it once."""
    with session(engine, readonly=True) as s:
        job = s.execute(select(Job).where(Job.status == VALIDATING).order_by(Job.seq).limit(1)).scalar_one_or_none()
        if job is None:
            return None
        ids = [i for i in (job.training_file, job.validation_file) if i]
        files = {f.id: f for f in s.execute(select(File).where(File.id.in_(ids), File.org_id == job.org_id)).scalars()}
    error = check_job_files(root, job, files)
    with session(engine) as s:
        query = select(Job).where(Job.id == job.id, Job.status == VALIDATING)
        row = s.execute(query.with_for_update() if is_postgres(engine) else query).scalar_one_or_none()
        if row is None:
            return job.id
        if error is not None:
            events.finish(s, row, "failed", f"File validation failed: {error['message']}", error=error)
        else:
            row.status = "queued"
            events.add(s, row, "Files validated, moving job to queued state")
    return job.id
