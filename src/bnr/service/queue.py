"""The job queue in the database: claim with a lease, heartbeat, and a reaper for the jobs of dead workers.

Postgres claims with `SELECT ... FOR UPDATE SKIP LOCKED` (workers on many machines never block on each other) and
locks the organization's row while counting its running jobs, so per-organization caps hold under concurrency;
SQLite runs every writing transaction as `BEGIN IMMEDIATE`, one writer at a time, which makes the same code atomic.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, func, select, update

from bnr.service import events
from bnr.service.db import Job, Org, is_postgres, now, session
from bnr.service.settings import ServiceSettings

SCAN = 50  # queued jobs looked at per claim (jobs of capped organizations are skipped)


def _locked(query: Any, engine: Engine) -> Any:
    return query.with_for_update(skip_locked=True) if is_postgres(engine) else query


def claim(engine: Engine, worker: str, settings: ServiceSettings) -> str | None:
    """Take the oldest queued job whose organization is under its concurrency cap; None if there is none."""
    with session(engine) as s:
        queued = s.execute(_locked(select(Job).where(Job.status == "queued").order_by(Job.seq).limit(SCAN), engine))
        for job in queued.scalars().all():
            org_query = select(Org).where(Org.id == job.org_id)
            org = s.execute(org_query.with_for_update() if is_postgres(engine) else org_query).scalar_one()
            cap = org.max_concurrent_jobs or settings.limits.max_concurrent_jobs
            running = s.execute(
                select(func.count()).where(Job.org_id == job.org_id, Job.status == "running")
            ).scalar_one()
            if running >= cap:
                continue
            job.status, job.lease_owner = "running", worker
            job.lease_expires_at = time.time() + settings.lease_seconds
            job.attempts += 1
            job.started_at = job.started_at or now()
            what = "Fine-tuning job started" if job.attempts == 1 else f"Job resumed (attempt {job.attempts})"
            events.add(s, job, what, data={"worker": worker, "attempt": job.attempts})
            return job.id
    return None


def heartbeat(engine: Engine, job_id: str, worker: str, lease_seconds: float) -> tuple[bool, bool]:
    """Extend the lease; (still ours, cancel requested)."""
    with session(engine) as s:
        done = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == worker, Job.status == "running")
            .values(lease_expires_at=time.time() + lease_seconds)
        )
        if not getattr(done, "rowcount", 0):
            return False, False
        cancel = s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one()
    return True, bool(cancel)


def release(engine: Engine, job_id: str, worker: str) -> None:
    """Give the lease up at once (the subprocess died without a verdict): the reaper requeues it."""
    with session(engine) as s:
        s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == worker).values(lease_expires_at=0.0))


def reap(engine: Engine, settings: ServiceSettings) -> list[str]:
    """Requeue running jobs whose lease expired, or fail them with `worker_lost` after `max_attempts`."""
    touched = []
    with session(engine) as s:
        stale = s.execute(
            _locked(select(Job).where(Job.status == "running", Job.lease_expires_at < time.time()), engine)
        )
        for job in stale.scalars().all():
            touched.append(job.id)
            if job.cancel_requested:
                events.finish(s, job, "cancelled", "Job cancelled")
            elif job.attempts >= settings.max_attempts:
                error = {
                    "code": "worker_lost",
                    "message": f"the job's worker was lost {job.attempts} times",
                    "param": None,
                }
                events.finish(s, job, "failed", "Job failed: its worker was lost too often", error=error)
            else:
                job.status, job.lease_owner, job.lease_expires_at = "queued", None, None
                events.add(
                    s,
                    job,
                    f"Worker lost; job requeued (attempt {job.attempts} of {settings.max_attempts})",
                    level="warn",
                )
    return touched
