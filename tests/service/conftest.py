"""Fixtures of the service tests: a database of each test's own (SQLite, or Postgres created and dropped) and a
service config over it (see `svc_helpers`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")

from svc_helpers import Service, _pg_admin, base_settings


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL of this test's own: a SQLite file, or a Postgres database created and dropped."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
        return
    admin = _pg_admin()
    if admin is None:
        pytest.skip("no PostgreSQL reachable on 127.0.0.1:5432 (trust auth, database `test`) or psycopg missing")
    conn, user = admin
    name = f"bnr_test_{uuid.uuid4().hex[:12]}"
    conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://{user}@127.0.0.1:5432/{name}"
    finally:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.close()


@pytest.fixture()
def service(tmp_path: Path, database: str) -> Iterator[Service]:
    svc = Service(tmp_path, database, base_settings(tmp_path / "store"))
    svc.write()
    yield svc
    svc.stop()
