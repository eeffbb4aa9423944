"""API keys: `bnr-sk-<random>`, stored as their sha256 only; a request's bearer key resolves to its organization."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select

from bnr.service.db import ApiKey, Org, session
from bnr.service.errors import ApiError

KEY_PREFIX = "bnr-sk-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def org_of(request: Request) -> Org:
    """The organization of the request's `Authorization: Bearer <key>` (401 when missing or unknown)."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "Missing API key: send `Authorization: Bearer <key>`", code="missing_api_key")
    digest = hash_key(key.strip())
    with session(request.app.state.engine, readonly=True) as s:
        row = s.execute(
            select(Org)
            .join(ApiKey, ApiKey.org_id == Org.id)
            .where(ApiKey.key_hash == digest, ApiKey.revoked.is_(False))
        ).scalar_one_or_none()
    if row is None:
        raise ApiError(401, "Incorrect API key provided", code="invalid_api_key")
    return row


OrgDep = Annotated[Org, Depends(org_of)]
