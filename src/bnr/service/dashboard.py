"""The provider's dashboard: server-rendered pages over the real database (jobs by organization, status, progress,
the safety gate's numbers beside the base's, events, errors). Provider-only: it needs the server's admin token,
$BNR_ADMIN_TOKEN (an environment variable, never a file), as `?token=` or a bearer header; unset, it is off."""

from __future__ import annotations

import html
import os
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from bnr.service.db import Event, Job, Org, session
from bnr.service.errors import ApiError, not_found

router = APIRouter(prefix="/dashboard")
STYLE = """body{font:14px sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}.failed{background:#fdd}
.succeeded{background:#dfd}.running{background:#ffd}.bar{background:#48c;height:10px}"""


def _check(request: Request) -> None:
    token = os.environ.get("BNR_ADMIN_TOKEN", "")
    given = request.query_params.get("token") or request.headers.get("authorization", "").removeprefix("Bearer ")
    if not token or not secrets.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "the dashboard needs the service's admin token", code="invalid_admin_token")


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _gate(j: Job) -> str:
    result: dict[str, Any] = j.result or {}
    gate: dict[str, Any] = result.get("safety") or {}
    parts = []
    if gate:
        job, base = gate["job"], gate["base"]
        parts.append(
            f"HS {job['hs']:.1f}% (base {base['hs']:.1f}%), over-refusal {job['over_refusal']:.1f}% "
            f"(base {base['over_refusal']:.1f}%)"
        )
        if "fa" in job:
            parts.append(f"FA {job['fa']:.1f}% (base {base['fa']:.1f}%)")
    if data := result.get("data_gate"):
        parts.append(f"data: {data['flagged']}/{data['pairs']} flagged")
    return ", ".join(parts)


def _row(j: Job, token: str) -> str:
    cells = [
        f"<a href='/dashboard/jobs/{j.id}?token={html.escape(token)}'>{j.id}</a>",
        j.model,
        (j.result or {}).get("defense", ""),
        j.status,
        j.stage or "",
        f"<div class='bar' style='width:{int(100 * j.progress)}px'></div>",
        _gate(j),
        (j.error or {}).get("code", ""),
        str(j.attempts),
    ]
    return f"<tr class='{j.status}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


@router.get("", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    _check(request)
    token = request.query_params.get("token", "")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("job", "base", "defense", "status", "stage", "progress", "safety gate", "error", "attempts")
    )
    parts = []
    with session(request.app.state.engine, readonly=True) as s:
        for org in s.execute(select(Org).order_by(Org.seq)).scalars():
            jobs = s.execute(select(Job).where(Job.org_id == org.id).order_by(Job.seq.desc()).limit(100)).scalars()
            rows = "".join(_row(j, token) for j in jobs)
            parts.append(
                f"<h2>{html.escape(org.name)} <small>{org.id}</small></h2><table><tr>{head}</tr>{rows}</table>"
            )
    return _page("bnr service: jobs by organization", "".join(parts))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request) -> HTMLResponse:
    _check(request)
    with session(request.app.state.engine, readonly=True) as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one_or_none()
        if job is None:
            raise not_found("fine-tuning job", job_id)
        evs = s.execute(select(Event).where(Event.job_id == job_id).order_by(Event.seq)).scalars().all()
    rows = "".join(
        f"<tr><td>{e.created_at}</td><td>{e.level}</td><td>{e.type}</td><td>{html.escape(e.message)}</td></tr>"
        for e in evs
    )
    error = f"<p class='failed'>{html.escape(str((job.error or {}).get('message')))}</p>" if job.error else ""
    body = (
        f"<p>{job.org_id} / {job.model} / {job.status} / {_gate(job)}</p>{error}"
        f"<table><tr><th>time</th><th>level</th><th>type</th><th>message</th></tr>{rows}</table>"
    )
    return _page(f"job {job_id}", body)
