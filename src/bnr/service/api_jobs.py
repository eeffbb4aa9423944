"""`/v1/fine_tuning/jobs`: create (idempotent with an `Idempotency-Key`), list, retrieve, cancel, events,
checkpoints. Every lookup is scoped by organization: another tenant's job is a 404, never a 403."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bnr.service import events
from bnr.service.api_files import ACTIVE, get_file
from bnr.service.auth import OrgDep
from bnr.service.db import Checkpoint, Event, Job, Org, PreparedBase, new_id, session
from bnr.service.errors import ApiError
from bnr.service.jobspec import needed_rank, policy_config, requested, resolve
from bnr.service.paging import owned, page
from bnr.service.validation import VALIDATING

router = APIRouter(prefix="/v1/fine_tuning")
TERMINAL = ("succeeded", "failed", "cancelled")
_SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class JobCreate(BaseModel):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None


def job_object(j: Job) -> dict[str, Any]:
    hp = j.hyperparameters
    return {
        "id": j.id,
        "object": "fine_tuning.job",
        "created_at": j.created_at,
        "error": j.error,
        "fine_tuned_model": j.fine_tuned_model,
        "finished_at": j.finished_at,
        "hyperparameters": hp,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        "model": j.model,
        "organization_id": j.org_id,
        "result_files": [],
        "seed": j.seed,
        "status": j.status,
        "trained_tokens": j.trained_tokens,
        "training_file": j.training_file,
        "validation_file": j.validation_file,
        "estimated_finish": None,
        "integrations": [],
        "metadata": j.job_metadata,
        "user_provided_suffix": j.suffix,
        "bnr": {
            "stage": j.stage,
            "progress": j.progress,
            "attempts": j.attempts,
            "started_at": j.started_at,
            **(j.result or {}),
        },
    }


def _check_body(body: JobCreate) -> None:
    if body.suffix is not None and not _SUFFIX.match(body.suffix):
        raise ApiError(
            400, f"suffix {body.suffix!r}: up to 64 letters, digits, '-' or '_'", param="suffix", code="invalid_value"
        )
    meta = body.metadata or {}
    if len(meta) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in meta.items()):
        raise ApiError(
            400,
            "metadata: up to 16 pairs, keys up to 64 and values up to 512 characters",
            param="metadata",
            code="invalid_value",
        )


def _usable_file(request: Request, org: Org, file_id: str, param: str) -> None:
    try:
        row = get_file(request, org, file_id)
    except ApiError:
        raise ApiError(400, f"{param} {file_id!r} does not exist", param=param, code="invalid_file") from None
    if row.status != "processed":
        raise ApiError(
            400, f"{param} {file_id!r} failed validation: {row.status_details}", param=param, code="invalid_file"
        )


def _plan(request: Request, org: Org, body: JobCreate) -> dict[str, Any]:
    """Everything checked before a row is written: base, files, knobs, rank. Returns the job's columns."""
    settings = request.app.state.settings
    policy = settings.base(body.model)
    with session(request.app.state.engine, readonly=True) as s:
        prepared = s.get(PreparedBase, body.model) if policy else None
    if policy is None or prepared is None:
        raise ApiError(
            400,
            f"model {body.model!r} is not available for fine-tuning here; GET /v1/models lists the bases",
            param="model",
            code="model_not_available",
        )
    _check_body(body)
    _usable_file(request, org, body.training_file, "training_file")
    if body.validation_file:
        _usable_file(request, org, body.validation_file, "validation_file")
    hp = resolve(policy, requested(body.model_dump()))
    rank = needed_rank(policy_config(policy))
    if rank > settings.max_lora_rank:
        raise ApiError(
            400,
            f"this base's deliverable needs --max-lora-rank {rank}, the server allows {settings.max_lora_rank}",
            param="model",
            code="lora_rank_too_large",
        )
    return {"hyperparameters": hp, "result": {"defense": policy.defense, "max_lora_rank": rank}}


def _request_hash(body: JobCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()


def _existing(request: Request, org: Org, key: str, digest: str) -> Job | None:
    with session(request.app.state.engine, readonly=True) as s:
        row = s.execute(select(Job).where(Job.org_id == org.id, Job.idempotency_key == key)).scalar_one_or_none()
    if row is not None and row.request_hash != digest:
        raise ApiError(
            400, f"Idempotency-Key {key!r} was used for another request; use a new key", code="idempotency_key_reused"
        )
    return row


@router.post("/jobs")
def create(body: JobCreate, request: Request, org: OrgDep) -> dict[str, Any]:
    key = request.headers.get("idempotency-key")
    digest = _request_hash(body)
    if key and (old := _existing(request, org, key, digest)) is not None:
        return job_object(old)
    plan = _plan(request, org, body)
    settings = request.app.state.settings
    job = Job(
        id=new_id("ftjob"),
        org_id=org.id,
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        status=VALIDATING,
        method={"type": "supervised"},
        seed=body.seed if body.seed is not None else 42,
        suffix=body.suffix,
        job_metadata=body.metadata,
        idempotency_key=key,
        request_hash=digest,
        **plan,
    )
    try:
        with session(request.app.state.engine) as s:
            waiting = s.execute(select(func.count()).where(Job.org_id == org.id, Job.status.in_(ACTIVE))).scalar_one()
            if waiting >= settings.limits.max_queued_jobs:
                raise ApiError(
                    429,
                    f"{waiting} jobs are validating, queued or running for this organization (limit "
                    f"{settings.limits.max_queued_jobs}); retry when one finishes",
                    code="too_many_jobs",
                    retry=True,
                )
            s.add(job)
            s.flush()
            files = body.training_file + (
                f" and validation file {body.validation_file}" if body.validation_file else ""
            )
            events.add(s, job, "Validating training file: " + files)
    except IntegrityError:  # the same Idempotency-Key raced in twice: the first one won
        if key and (old := _existing(request, org, key, digest)) is not None:
            return job_object(old)
        raise
    return job_object(job)


def get_job(request: Request, org: Org, job_id: str) -> Job:
    row: Job = owned(request.app.state.engine, Job, org.id, job_id, "fine-tuning job")
    return row


@router.get("/jobs")
def list_jobs(request: Request, org: OrgDep, after: str | None = None, limit: int = 20) -> dict:
    return page(request.app.state.engine, Job, select(Job).where(Job.org_id == org.id), after, limit, job_object)


@router.get("/jobs/{job_id}")
def retrieve(job_id: str, request: Request, org: OrgDep) -> dict[str, Any]:
    return job_object(get_job(request, org, job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, request: Request, org: OrgDep) -> dict[str, Any]:
    get_job(request, org, job_id)
    with session(request.app.state.engine) as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        if job.status in TERMINAL:
            raise ApiError(
                400, f"job {job_id!r} has already {job.status}; nothing to cancel", param="job_id", code="job_finished"
            )
        if job.status == "running":
            job.cancel_requested = True
            events.add(s, job, "Cancellation requested; stopping the job")
        else:
            events.finish(s, job, "cancelled", "Job cancelled before it started")
    return job_object(job)


def event_object(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "object": "fine_tuning.job.event",
        "created_at": e.created_at,
        "level": e.level,
        "message": e.message,
        "type": e.type,
        "data": e.data,
    }


@router.get("/jobs/{job_id}/events")
def list_events(
    job_id: str, request: Request, org: OrgDep, after: str | None = None, limit: int = 20
) -> dict[str, Any]:
    get_job(request, org, job_id)
    query = select(Event).where(Event.job_id == job_id, Event.org_id == org.id)
    return page(request.app.state.engine, Event, query, after, limit, event_object)


def checkpoint_object(c: Checkpoint, job: Job) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": c.created_at,
        "fine_tuned_model_checkpoint": f"ft:{job.model}:{job.org_id}:{job.suffix or ''}:{job.id}:ckpt-step-"
        f"{c.step_number}",
        "fine_tuning_job_id": job.id,
        "metrics": c.metrics,
        "step_number": c.step_number,
    }


@router.get("/jobs/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str, request: Request, org: OrgDep, after: str | None = None, limit: int = 10
) -> dict[str, Any]:
    job = get_job(request, org, job_id)
    query = select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.org_id == org.id)
    return page(request.app.state.engine, Checkpoint, query, after, limit, lambda c: checkpoint_object(c, job))
