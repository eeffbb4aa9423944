"""Helpers of the service tests: a live `bnr serve` on 127.0.0.1 (a subprocess on a free port) over SQLite or
a Postgres database of its own,
with organizations and keys made by the admin functions, and the official `openai` SDK as the client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

SRC = Path(__file__).resolve().parents[2] / "src"
PG_ADMIN = "postgresql://{user}@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(SRC) + os.pathsep + out.get("PYTHONPATH", "")
    out.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return out


def bnr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bnr", *args], env=env(), capture_output=True, text=True, check=check, timeout=900
    )


def _pg_admin() -> tuple[Any, str] | None:
    try:
        import psycopg
    except ImportError:
        return None
    for user in ("postgres", "root"):
        try:
            return psycopg.connect(PG_ADMIN.format(user=user), autocommit=True, connect_timeout=3), user
        except Exception:
            continue
    return None


@dataclass
class Service:
    """A service config on disk, its live server, and helpers for organizations and clients."""

    root: Path
    url: str
    settings: dict[str, Any]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "service.yaml"

    @property
    def store(self) -> Path:
        return Path(self.settings["store"])

    def write(self) -> None:
        self.config.write_text(yaml.safe_dump({**self.settings, "database_url": self.url}))

    def admin(self, *args: str) -> str:
        """`bnr service ARGS` with this config, as a command."""
        return bnr("service", "-c", str(self.config), *args).stdout.strip()

    def prepare(self, base: str) -> None:
        from bnr.service import admin
        from bnr.service.settings import load_settings

        admin.prepare_base(load_settings(str(self.config)), base)

    def org(self, name: str, max_concurrent_jobs: int | None = None) -> str:
        """An organization and a key for it (in this process: the admin functions the command calls)."""
        from bnr.service import admin
        from bnr.service.settings import load_settings

        settings = load_settings(str(self.config))
        admin.create_org(settings, name, max_concurrent_jobs)
        self.keys[name] = admin.create_key(settings, name)
        return self.keys[name]

    def client(self, org: str, **kw: Any) -> Any:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=self.keys[org], **kw)

    def start(self, workers: int = 0, **extra_env: str) -> None:
        self.port = free_port()
        log = open(self.root / "serve.log", "ab")  # noqa: SIM115 - the server's lifetime
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bnr",
                "serve",
                "-c",
                str(self.config),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env={**env(), **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bnr serve exited: {(self.root / 'serve.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("bnr serve did not start in 120 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        path = self.root / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""


def base_settings(store: Path, **extra: Any) -> dict[str, Any]:
    """A toy service: `toy-sft` (plain LoRA, no provider artifacts) and `toy` (bnr) at a small, fast size."""
    small = [
        "buffer.n=96",
        "buffer.train.epochs=1",
        "reinforce.n_refusal=64",
        "reinforce.n_benign=64",
        "reinforce.train.epochs=1",
    ]
    settings: dict[str, Any] = {
        "store": str(store),
        "bases": [
            # plain LoRA; this provider states it may have no buffer registered (the guard fails closed otherwise)
            {"name": "toy-sft", "preset": "toy", "defense": "sft", "overrides": ["guard.no_buffer_registered=true"]},
            {"name": "toy", "preset": "toy", "defense": "bnr", "overrides": small},
        ],
        "gate": {"enabled": False, "limit": 12, "batch_size": 32},
        "limits": {"max_file_bytes": 200_000},
        "lease_seconds": 4.0,
        "heartbeat_seconds": 1.0,
        "poll_seconds": 0.3,
        "save_every": 2,
    }
    settings.update(extra)
    return settings


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def toy_chat(split: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    """`n` records of a toy-world split as chat `messages` rows (what a tenant uploads)."""
    from bnr.toy.world import split as toy_split

    rows = []
    for r in toy_split(split)[start : start + n]:
        prompt = r.instruction + (f"\n{r.input}" if r.input else "")
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": r.output}]})
    return rows


def wait_job(client: Any, job_id: str, timeout: float = 600) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


# fixtures (a conftest.py here would shadow tests/conftest.py's `from conftest import ...` in other test files)
@contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """A database URL of a test's own: a SQLite file in `folder`, or a Postgres database created and dropped
    (the test skips, with the reason, where no Postgres answers)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'service.db'}"
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


@pytest.fixture(name="database", params=["sqlite", "postgres"])
def database_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(name="service")
def service_fixture(tmp_path: Path, database: str) -> Iterator[Service]:
    svc = Service(tmp_path, database, base_settings(tmp_path / "store"))
    svc.write()
    yield svc
    svc.stop()
