"""Job events (stage transitions as messages, loss as metrics) and the terminal transitions, in the caller's
transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from bnr.service.db import Event, Job, new_id, now


def add(
    s: Session,
    job: Job,
    message: str,
    *,
    level: str = "info",
    kind: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    s.add(
        Event(
            id=new_id("ftevent"), job_id=job.id, org_id=job.org_id, message=message, level=level, type=kind, data=data
        )
    )


def finish(s: Session, job: Job, status: str, message: str, *, error: dict[str, Any] | None = None) -> None:
    """Move `job` to a terminal status with its event; the lease is released."""
    job.status, job.finished_at, job.error = status, now(), error
    job.lease_owner, job.lease_expires_at = None, None
    add(s, job, message, level="error" if status == "failed" else "info")
