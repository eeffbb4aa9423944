"""`/v1/files`: upload (multipart, purpose fine-tune), list, retrieve, content, delete; scoped by organization.

An upload is streamed to `<store>/tmp`, size-checked as it arrives (413 over the organization's limit), checked
with bnr's data layer (chat `messages`, prompt/completion or instruction/output JSONL; a bad file is kept with
status `error` and the line and the reason in `status_details`), then renamed into place and recorded in one
transaction. A server killed mid-upload leaves only a tmp file, which the next start clears.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select

from bnr.service import store
from bnr.service.auth import OrgDep
from bnr.service.db import File as FileRow
from bnr.service.db import Job, Org, new_id, session
from bnr.service.errors import ApiError
from bnr.service.paging import owned, page
from bnr.service.validation import validate_file

router = APIRouter(prefix="/v1")
ACTIVE = ("validating_files", "queued", "running")
CHUNK = 1 << 20
_BAD_NAME = re.compile(r"[/\\\x00]|^\.\.?$")


def file_object(f: FileRow) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": f.status,
        "status_details": f.status_details,
        "expires_at": None,
    }


def _limit(org: Org, request: Request, name: str) -> int:
    own = getattr(org, name)
    return int(own if own is not None else getattr(request.app.state.settings.limits, name))


def check_filename(name: str | None) -> str:
    if not name or _BAD_NAME.search(name) or len(name) > 255:
        raise ApiError(
            400,
            f"filename {name!r}: give a plain file name without path separators",
            param="file",
            code="invalid_filename",
        )
    return name


async def _receive(upload: UploadFile, tmp: Path, limit: int) -> tuple[int, str]:
    """Stream the upload to `tmp`; (bytes, sha256). Over `limit`: the tmp file goes and the answer is 413."""
    digest, size = hashlib.sha256(), 0
    with open(tmp, "wb") as out:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limit:
                out.close()
                tmp.unlink(missing_ok=True)
                raise ApiError(
                    413,
                    f"file is over this organization's limit of {limit} bytes; split it",
                    param="file",
                    code="file_too_large",
                )
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


@router.post("/files")
async def upload(
    request: Request, org: OrgDep, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
) -> dict[str, Any]:
    if purpose != "fine-tune":
        raise ApiError(
            400, f"purpose {purpose!r} is not supported; use 'fine-tune'", param="purpose", code="invalid_purpose"
        )
    filename = check_filename(file.filename)
    file_id = new_id("file")
    tmp = store.tmp_dir(request.app.state.store) / f"{file_id}.jsonl"
    size, sha = await _receive(file, tmp, _limit(org, request, "max_file_bytes"))
    try:  # the database and the data check block: off the event loop
        row = await run_in_threadpool(_record, request, org, file_id, filename, tmp, size, sha)
    finally:
        tmp.unlink(missing_ok=True)
    return file_object(row)


def _record(request: Request, org: Org, file_id: str, filename: str, tmp: Path, size: int, sha: str) -> FileRow:
    """Quota, data check, then the file renamed into place and its row committed (the row last)."""
    root: Path = request.app.state.store
    engine = request.app.state.engine
    with session(engine, readonly=True) as s:
        used = s.execute(select(func.coalesce(func.sum(FileRow.bytes), 0)).where(FileRow.org_id == org.id))
        used_bytes = int(used.scalar_one())
    quota = _limit(org, request, "max_storage_bytes")
    if used_bytes + size > quota:
        raise ApiError(
            429,
            f"storage quota of {quota} bytes reached ({used_bytes} used); delete files first",
            code="storage_quota_exceeded",
        )
    status, details, n, labelled = validate_file(tmp, filename)
    final = store.file_path(root, org.id, file_id)
    row = FileRow(
        id=file_id,
        org_id=org.id,
        filename=filename,
        purpose="fine-tune",
        bytes=size,
        sha256=sha,
        status=status,
        status_details=details,
        records=n,
        labelled=labelled,
        path=str(final.relative_to(root)),
    )
    store.publish(tmp, final)
    try:
        with session(engine) as s:
            s.add(row)
    except Exception:
        final.unlink(missing_ok=True)
        raise
    return row


def get_file(request: Request, org: Org, file_id: str) -> FileRow:
    row: FileRow = owned(request.app.state.engine, FileRow, org.id, file_id, "file")
    return row


@router.get("/files")
def list_files(
    request: Request, org: OrgDep, after: str | None = None, limit: int = 100, purpose: str | None = None
) -> dict[str, Any]:
    query = select(FileRow).where(FileRow.org_id == org.id)
    if purpose:
        query = query.where(FileRow.purpose == purpose)
    return page(request.app.state.engine, FileRow, query, after, limit, file_object)


@router.get("/files/{file_id}")
def retrieve(file_id: str, request: Request, org: OrgDep) -> dict[str, Any]:
    return file_object(get_file(request, org, file_id))


@router.get("/files/{file_id}/content")
def content(file_id: str, request: Request, org: OrgDep) -> FileResponse:
    row = get_file(request, org, file_id)
    return FileResponse(request.app.state.store / row.path, media_type="application/octet-stream")


@router.delete("/files/{file_id}")
def delete(file_id: str, request: Request, org: OrgDep) -> dict[str, Any]:
    row = get_file(request, org, file_id)
    with session(request.app.state.engine) as s:
        busy = s.execute(
            select(Job.id).where(
                Job.org_id == org.id,
                Job.status.in_(ACTIVE),
                (Job.training_file == file_id) | (Job.validation_file == file_id),
            )
        ).first()
        if busy:
            raise ApiError(
                400,
                f"file {file_id!r} is used by the active job {busy[0]!r}; cancel it first",
                param="file_id",
                code="file_in_use",
            )
        s.execute(sa_delete(FileRow).where(FileRow.id == file_id))
    (request.app.state.store / row.path).unlink(missing_ok=True)
    return {"id": file_id, "object": "file", "deleted": True}
