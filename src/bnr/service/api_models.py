"""`/v1/models`: the bases whose provider artifacts are prepared, and the caller's fine-tuned models. A provider
artifact is never a model here: only bases (served plain) and released deliverables are listed or resolvable."""

from __future__ import annotations

import shutil
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import delete as sa_delete
from sqlalchemy import select

from bnr.service.auth import OrgDep
from bnr.service.db import FineTunedModel, Org, PreparedBase, session
from bnr.service.errors import ApiError, not_found

router = APIRouter(prefix="/v1")
PROVIDER = "bnr-provider"


def _model(ident: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": ident, "object": "model", "created": created, "owned_by": owner}


def ready_bases(request: Request) -> dict[str, int]:
    """Base name -> prepared time, for the bases in the config whose artifacts are prepared."""
    names = {b.name for b in request.app.state.settings.bases}
    with session(request.app.state.engine, readonly=True) as s:
        rows = s.execute(select(PreparedBase)).scalars().all()
    return {r.name: r.prepared_at for r in rows if r.name in names}


def own_model(request: Request, org: Org, model_id: str) -> FineTunedModel | None:
    with session(request.app.state.engine, readonly=True) as s:
        return s.execute(
            select(FineTunedModel).where(FineTunedModel.id == model_id, FineTunedModel.org_id == org.id)
        ).scalar_one_or_none()


@router.get("/models")
def list_models(request: Request, org: OrgDep) -> dict[str, Any]:
    data = [_model(name, t, PROVIDER) for name, t in sorted(ready_bases(request).items())]
    with session(request.app.state.engine, readonly=True) as s:
        mine = s.execute(select(FineTunedModel).where(FineTunedModel.org_id == org.id).order_by(FineTunedModel.seq))
        data += [_model(m.id, m.created_at, org.id) for m in mine.scalars()]
    return {"object": "list", "data": data}


@router.get("/models/{model_id:path}")
def retrieve(model_id: str, request: Request, org: OrgDep) -> dict[str, Any]:
    bases = ready_bases(request)
    if model_id in bases:
        return _model(model_id, bases[model_id], PROVIDER)
    row = own_model(request, org, model_id)
    if row is None:
        raise not_found("model", model_id, "model")
    return _model(row.id, row.created_at, org.id)


@router.delete("/models/{model_id:path}")
def delete(model_id: str, request: Request, org: OrgDep) -> dict[str, Any]:
    if model_id in ready_bases(request):
        raise ApiError(
            403,
            f"{model_id!r} is a base model of the provider; only fine-tuned models can be deleted",
            param="model",
            code="permission_denied",
        )
    row = own_model(request, org, model_id)
    if row is None:
        raise not_found("model", model_id, "model")
    with session(request.app.state.engine) as s:
        s.execute(sa_delete(FineTunedModel).where(FineTunedModel.id == model_id))
    shutil.rmtree(request.app.state.store / row.path, ignore_errors=True)
    return {"id": model_id, "object": "model", "deleted": True}
