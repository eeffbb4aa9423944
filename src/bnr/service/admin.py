"""Provider administration: organizations, API keys, usage, and preparing a base (its provider artifacts built
once through bnr's stages and registered with the buffer guard, and its safety-probe numbers cached)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy import func, select

from bnr.artifacts import hash_json
from bnr.errors import BnrError
from bnr.service import store
from bnr.service.auth import hash_key, new_key
from bnr.service.db import ApiKey, File, FineTunedModel, Job, Org, PreparedBase, make_engine, new_id, session, upgrade
from bnr.service.settings import BasePolicy, ServiceSettings

log = logging.getLogger(__name__)


def create_org(settings: ServiceSettings, name: str, max_concurrent_jobs: int | None = None) -> str:
    upgrade(settings.url)
    engine = make_engine(settings.url)
    with session(engine) as s:
        if s.execute(select(Org).where(Org.name == name)).scalar_one_or_none():
            raise BnrError(f"organization {name!r} exists already; choose another name")
        org_id = "org-" + hashlib.sha256(name.encode()).hexdigest()[:8] + new_id("")[1:7]
        s.add(Org(id=org_id, name=name, max_concurrent_jobs=max_concurrent_jobs))
    return org_id


def _org(s: Any, name: str) -> Org:
    org = s.execute(select(Org).where((Org.name == name) | (Org.id == name))).scalar_one_or_none()
    if org is None:
        raise BnrError(f"no organization {name!r}; create it with `bnr service org create {name}`")
    return org


def create_key(settings: ServiceSettings, org_name: str) -> str:
    """A new API key for the organization; only its sha256 is stored, so it is shown once."""
    upgrade(settings.url)
    engine = make_engine(settings.url)
    key = new_key()
    with session(engine) as s:
        org = _org(s, org_name)
        s.add(ApiKey(org_id=org.id, key_hash=hash_key(key), prefix=key[:10]))
    return key


def usage(settings: ServiceSettings) -> list[dict[str, Any]]:
    """Per organization: files and bytes stored, jobs by status, fine-tuned models."""
    upgrade(settings.url)
    engine = make_engine(settings.url)
    rows = []
    with session(engine, readonly=True) as s:
        for org in s.execute(select(Org).order_by(Org.seq)).scalars():
            files = s.execute(
                select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(File.org_id == org.id)
            )
            n_files, n_bytes = files.one()
            by_status = select(Job.status, func.count()).where(Job.org_id == org.id).group_by(Job.status)
            jobs = {status: n for status, n in s.execute(by_status).all()}
            models = s.execute(select(func.count()).where(FineTunedModel.org_id == org.id)).scalar_one()
            rows.append(
                {
                    "org": org.name,
                    "id": org.id,
                    "files": n_files,
                    "bytes": int(n_bytes),
                    "jobs": jobs,
                    "models": models,
                }
            )
    return rows


def policy_key(policy: BasePolicy) -> str:
    return hash_json([policy.preset, policy.defense, policy.overrides])


def prepare_base(settings: ServiceSettings, name: str) -> dict[str, Any]:
    """Build (or reuse, by stage key) the provider artifacts the base's defense needs, evaluate the base on the
    safety probe, and record both; jobs on the base are accepted from then on."""
    from bnr.defenses import get_defense
    from bnr.orchestrate import build_provider_artifacts
    from bnr.service.gate import probe
    from bnr.service.jobspec import policy_config

    policy = settings.base(name)
    if policy is None:
        raise BnrError(f"base {name!r} is not in the service config; bases: {[b.name for b in settings.bases]}")
    root = settings.store_path
    store.use_registry(root)
    upgrade(settings.url)
    cfg = policy_config(policy)
    needs = get_defense(cfg.user.defense).requires
    built = build_provider_artifacts(needs, store.base_dir(root, name), settings=cfg)
    artifacts = {a: str(path) for a, path in built.items()}
    safety = probe(cfg, settings.gate, None) if settings.gate.enabled else None
    engine = make_engine(settings.url)
    with session(engine) as s:
        row = s.get(PreparedBase, name)
        if row is None:
            row = PreparedBase(name=name, key=policy_key(policy), artifacts=artifacts, safety=safety)
            s.add(row)
        else:
            row.key, row.artifacts, row.safety = policy_key(policy), artifacts, safety
    return {"base": name, "defense": policy.defense, "artifacts": sorted(artifacts), "safety": safety}
