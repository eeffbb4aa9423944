"""Jobs end to end through the official `openai` SDK against a live `bnr serve --workers N` on the toy base:
upload -> create -> poll -> events, checkpoints, models; the safety gate (real: `bnr` passes a harmful-heavy job
that `sft` fails); a SIGKILLed worker's job requeued and resumed bit for bit; a server killed mid-upload; cancel.
The default suite runs one small job on SQLite; the rest is `slow`."""

from __future__ import annotations

from pathlib import Path

import pytest
from svc_helpers import Service, base_settings, jsonl, toy_chat, wait_job

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _service(tmp_path: Path, name: str = "svc", **extra: object) -> Service:
    root = tmp_path / name
    root.mkdir()
    svc = Service(root, f"sqlite:///{root / 'service.db'}", base_settings(root / "store", **extra))
    svc.write()
    return svc


def test_upload_train_events_checkpoints_models(tmp_path: Path) -> None:
    svc = _service(tmp_path, gate={"enabled": True, "limit": 8, "batch_size": 16})
    svc.admin("prepare-base", "toy-sft")  # the command itself, once; it evaluates the base for the gate
    svc.org("acme")
    svc.start(workers=1)
    try:
        c = svc.client("acme")
        f = c.files.create(file=("sst2.jsonl", jsonl(toy_chat("benign_sst2", 16))), purpose="fine-tune")
        job = c.fine_tuning.jobs.create(
            model="toy-sft",
            training_file=f.id,
            suffix="sst",
            seed=7,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
        )
        job = wait_job(c, job.id)
        assert job.status == "succeeded", (job.error, svc.log()[-3000:])
        assert job.fine_tuned_model == f"ft:toy-sft:{job.organization_id}:sst:{job.id}"
        events = c.fine_tuning.jobs.list_events(job.id, limit=100).data
        metrics = [e.data["step"] for e in events if e.type == "metrics"]
        assert sorted(metrics) == [1, 2, 3, 4]
        assert any(e.message.startswith("safety gate: HS") for e in events)
        assert [ck.step_number for ck in c.fine_tuning.jobs.checkpoints.list(job.id).data] == [4, 2]
        assert job.fine_tuned_model in [m.id for m in c.models.list().data]
        gate = job.model_extra["bnr"]["safety"]
        assert gate["passed"] and {"hs", "over_refusal"} <= set(gate["job"]) and gate["base"]["hs"] is not None
        folder = svc.store / job.model_extra["bnr"]["deliverable"]
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        assert c.models.delete(job.fine_tuned_model).deleted and not folder.exists()
        assert '"models": 0' in svc.admin("usage")
    finally:
        svc.stop()
