"""`bnr worker --executor ray`: a job runs as a Ray task (a local Ray started by the worker) while the database
stays the source of truth: claimed, heartbeated and finished through it, the deliverable released as usual."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")  # the `service` extra
pytest.importorskip("openai")  # the `dev` extra
pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install 'bnr[ray]')")

from svc_helpers import Service, base_settings, env, jsonl, toy_chat, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]


def test_ray_executor_runs_the_job_as_a_ray_task(tmp_path: Path) -> None:
    svc = Service(tmp_path, f"sqlite:///{tmp_path / 'service.db'}", base_settings(tmp_path / "store"))
    svc.write()
    svc.prepare("toy-sft")
    svc.org("acme")
    svc.start(workers=0)
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115 - the worker's lifetime
    cmd = [sys.executable, "-m", "bnr", "worker", "-c", str(svc.config), "--executor", "ray"]
    worker = subprocess.Popen(cmd, env={**env(), "RAY_ADDRESS": ""}, stdout=log, stderr=subprocess.STDOUT)
    try:
        c = svc.client("acme")
        f = c.files.create(file=("sst2.jsonl", jsonl(toy_chat("benign_sst2", 8))), purpose="fine-tune")
        hp = {"n_epochs": 2, "batch_size": 4}
        job = c.fine_tuning.jobs.create(
            model="toy-sft", training_file=f.id, method={"type": "supervised", "supervised": {"hyperparameters": hp}}
        )
        done = wait_job(c, job.id, timeout=900)
        assert done.status == "succeeded", (done.error, (tmp_path / "worker.log").read_text()[-3000:])
        assert done.model_extra["bnr"]["executor"] == "ray" and done.model_extra["bnr"]["attempts"] == 1
        assert (svc.store / done.model_extra["bnr"]["deliverable"] / "adapter_model.safetensors").is_file()
        steps = [e.data["step"] for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
        assert sorted(steps) == [1, 2, 3, 4]
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        svc.stop()
