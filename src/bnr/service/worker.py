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

from sqlalchemy import Engine, select

from bnr.service import events, queue
from bnr.service.db import Job, make_engine, session, upgrade
from bnr.service.settings import ServiceSettings
from bnr.service.validation import validate_next

log = logging.getLogger(__name__)
SETTINGS_ENV = "BNR_SERVICE_SETTINGS"
GPU_ENV = "BNR_SERVICE_GPU"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(settings: ServiceSettings, job_id: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
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


def supervise(engine: Engine, settings: ServiceSettings, job_id: str, worker: str) -> None:
    """Run one claimed job to its end, heartbeating; a cancel or a lost lease stops the subprocess."""
    proc = spawn(settings, job_id)
    last = time.monotonic()
    while proc.poll() is None:
        time.sleep(0.2)
        if time.monotonic() - last < min(settings.heartbeat_seconds, 1.0):
            continue
        last = time.monotonic()
        ours, cancel = queue.heartbeat(engine, job_id, worker, settings.lease_seconds)
        if not ours or cancel:
            _stop(proc)
            if cancel:
                with session(engine) as s:
                    job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
                    if job.status == "running":
                        events.finish(s, job, "cancelled", "Job cancelled")
            return
    with session(engine, readonly=True) as s:
        status = s.execute(select(Job.status).where(Job.id == job_id)).scalar_one()
    if status == "running":  # the subprocess ended without a verdict (killed, out of memory): requeue
        log.warning("job %s: its process exited with %s without a verdict; releasing it", job_id, proc.returncode)
        queue.release(engine, job_id, worker)


def run_worker(settings: ServiceSettings, *, stop: threading.Event | None = None, name: str | None = None) -> None:
    """Claim and run jobs until `stop` is set (or forever)."""
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
        supervise(engine, settings, job_id, worker)
