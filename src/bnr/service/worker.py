"""`bnr worker`: check the files of new jobs (`validating_files` -> `queued`), claim queued jobs, run each in its
own subprocess (`bnr.service.runner`), heartbeat its lease, stop it within seconds of a cancel, and reap the jobs of
dead workers.

The subprocess dies with its worker (Linux `PR_SET_PDEATHSIG`), so a SIGKILLed worker leaves no job running
unsupervised; its lease expires and another worker resumes the job from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Protocol

from sqlalchemy import Engine, select

from bnr.errors import BnrError
from bnr.service import events, queue
from bnr.service.db import Job, make_engine, session, upgrade
from bnr.service.settings import ServiceSettings
from bnr.service.validation import validate_next

log = logging.getLogger(__name__)
SETTINGS_ENV = "BNR_SERVICE_SETTINGS"
GPU_ENV = "BNR_SERVICE_GPU"
EXECUTOR_ENV = "BNR_SERVICE_EXECUTOR"  # set in a job's process by the executor that started it (recorded on the job)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def job_env(settings: ServiceSettings) -> dict[str, str]:
    """What a job's process needs besides the worker's environment: the service settings."""
    return {SETTINGS_ENV: json.dumps(dataclasses.asdict(settings))}


def spawn(settings: ServiceSettings, job_id: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **job_env(settings)}
    if os.environ.get(GPU_ENV):  # one GPU pinned per worker where there are GPUs
        env["CUDA_VISIBLE_DEVICES"] = os.environ[GPU_ENV]
    return subprocess.Popen([sys.executable, "-m", "bnr.service.runner", job_id], env=env, preexec_fn=_die_with_parent)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Running(Protocol):
    """A started job: `poll()` is its exit status once it ended (None while it runs), `stop()` ends it."""

    def poll(self) -> int | None: ...

    def stop(self) -> None: ...


class LocalJob:
    """The job's process on this machine (`python -m bnr.service.runner JOB_ID`), dying with the worker."""

    def __init__(self, settings: ServiceSettings, job_id: str) -> None:
        self.proc = spawn(settings, job_id)

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        _stop(self.proc)


def run_in_ray_task(env: dict[str, str], job_id: str) -> int:
    """The body of a job's Ray task: the same job process as a local worker's, on the task's node (Ray pins the
    task's GPU through CUDA_VISIBLE_DEVICES); its exit status."""
    argv = [sys.executable, "-m", "bnr.service.runner", job_id]
    env = {**os.environ, **env, EXECUTOR_ENV: "ray"}
    return subprocess.run(argv, env=env, preexec_fn=_die_with_parent, check=False).returncode


class RayJob:
    """The job as a Ray task (`bnr worker --executor ray`): Ray places it on a node of its cluster (one GPU where
    the cluster has GPUs); the worker still claims, heartbeats and cancels through the database, which stays the
    only source of truth. A task whose node is lost ends without a verdict, and the job is requeued as usual."""

    def __init__(self, settings: ServiceSettings, job_id: str) -> None:
        self.ray = start_ray()
        gpus = 1 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = self.ray.remote(num_gpus=gpus, max_retries=0)(run_in_ray_task)
        forwarded = {k: v for k, v in os.environ.items() if k.startswith(("BNR_", "HF_"))}
        self.ref = task.remote({**forwarded, **job_env(settings)}, job_id)

    def poll(self) -> int | None:
        ready, _ = self.ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            return int(self.ray.get(self.ref))
        except Exception as e:  # the task's worker or node died, or it was cancelled
            log.warning("job task ended without a status: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
            return -1

    def stop(self) -> None:
        self.ray.cancel(self.ref, force=True)  # kills the task's process; the job process dies with it
        with contextlib.suppress(Exception):
            self.ray.wait([self.ref], timeout=10)


def start_ray() -> Any:
    """The `ray` module, started: the cluster at $RAY_ADDRESS, or a local one."""
    try:
        import ray
    except ImportError:
        raise BnrError("--executor ray needs Ray: pip install 'bnr[ray]', or use --executor local") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, logging_level=logging.WARNING)
    return ray


EXECUTORS: dict[str, type[LocalJob] | type[RayJob]] = {"local": LocalJob, "ray": RayJob}


def supervise(engine: Engine, settings: ServiceSettings, job_id: str, worker: str, executor: str = "local") -> None:
    """Run one claimed job to its end, heartbeating; a cancel or a lost lease stops it."""
    job: Running = EXECUTORS[executor](settings, job_id)
    last = time.monotonic()
    while (code := job.poll()) is None:
        time.sleep(0.2)
        if time.monotonic() - last < min(settings.heartbeat_seconds, 1.0):
            continue
        last = time.monotonic()
        ours, cancel = queue.heartbeat(engine, job_id, worker, settings.lease_seconds)
        if not ours or cancel:
            job.stop()
            if cancel:
                with session(engine) as s:
                    row = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
                    if row.status == "running":
                        events.finish(s, row, "cancelled", "Job cancelled")
            return
    with session(engine, readonly=True) as s:
        status = s.execute(select(Job.status).where(Job.id == job_id)).scalar_one()
    if status == "running":  # the subprocess ended without a verdict (killed, out of memory): requeue
        log.warning("job %s: its process exited with %s without a verdict; releasing it", job_id, code)
        queue.release(engine, job_id, worker)


def run_worker(
    settings: ServiceSettings,
    *,
    stop: threading.Event | None = None,
    name: str | None = None,
    executor: str = "local",
) -> None:
    """Claim and run jobs until `stop` is set (or forever); each job as a local process or (`executor="ray"`) as a
    Ray task."""
    if executor == "ray":
        start_ray()  # fail before claiming anything when Ray is missing
        if threading.current_thread() is threading.main_thread():  # SIGTERM: exit through atexit, which stops Ray
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    worker = name or f"{socket.gethostname()}:{os.getpid()}"
    upgrade(settings.url)
    engine = make_engine(settings.url)
    log.info("worker %s polling %s", worker, settings.url.split("@")[-1])
    while stop is None or not stop.is_set():
        queue.reap(engine, settings)
        if validate_next(engine, settings.store_path) is not None:
            continue  # jobs waiting on their files' check go first: they are cheap, and then queued
        job_id = queue.claim(engine, worker, settings)
        if job_id is None:
            time.sleep(settings.poll_seconds)
            continue
        log.info("worker %s: running %s", worker, job_id)
        supervise(engine, settings, job_id, worker, executor)
