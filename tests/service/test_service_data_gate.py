"""The data gate: the provider's judge over a job's training pairs before training (the toy's exact `toy-harm` judge
on toy-world files), under each policy, through the runner's own code on a real SQLite database and store:
`proceed` records the counts, `warn` records them as a warning and trains, `reject` fails the job before any
training with `harmful_training_data`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")  # the `service` extra
pytest.importorskip("sqlalchemy")

from svc_helpers import jsonl, toy_chat


def _job(tmp_path: Path, rows: list[dict[str, Any]], policy: str) -> tuple[Any, Any, str]:
    """A service store and database with one running job on `toy-sft` whose training file holds `rows`."""
    from sqlalchemy import select

    from bnr import plugins
    from bnr.config import parse_section
    from bnr.service import admin, store
    from bnr.service.db import File, Job, PreparedBase, make_engine, session
    from bnr.service.settings import ServiceSettings
    from bnr.service.validation import validate_file

    plugins.load()
    settings = parse_section(
        ServiceSettings,
        {
            "store": str(tmp_path / "store"),
            "bases": [{"name": "toy-sft", "preset": "toy", "defense": "sft"}],
            "gate": {"enabled": False},
            "data_gate": {"policy": policy, "judge": "toy-harm", "max_harmful_share": 0.5},
        },
    )
    org = admin.create_org(settings, "acme")
    engine = make_engine(settings.url)
    path = store.file_path(settings.store_path, org, "file-1")
    path.parent.mkdir(parents=True)
    path.write_bytes(jsonl(rows))
    status, _, n, _ = validate_file(path, "t.jsonl")
    assert status == "processed"
    with session(engine) as s:
        s.add(PreparedBase(name="toy-sft", key="k", artifacts={}))
        s.add(
            File(
                id="file-1",
                org_id=org,
                filename="t.jsonl",
                purpose="fine-tune",
                bytes=path.stat().st_size,
                sha256="-",
                status=status,
                records=n,
                path=str(path.relative_to(settings.store_path)),
            )
        )
        s.add(
            Job(
                id="ftjob-1",
                org_id=org,
                model="toy-sft",
                training_file="file-1",
                status="running",
                hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1.0},
                method={"type": "supervised"},
                seed=1,
            )
        )
    with session(engine, readonly=True) as s:
        assert s.execute(select(Job.status)).scalar_one() == "running"
    return engine, settings, "ftjob-1"


def _state(engine: Any, job_id: str) -> tuple[Any, list[Any]]:
    from sqlalchemy import select

    from bnr.service.db import Event, Job, session

    with session(engine, readonly=True) as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        evs = s.execute(select(Event).where(Event.job_id == job_id).order_by(Event.seq)).scalars().all()
    return job, list(evs)


HARMFUL_HEAVY = toy_chat("user_harmful", 12) + toy_chat("benign_sst2", 4)  # 12 of 16 pairs comply with harm


@pytest.mark.parametrize("policy", ["proceed", "warn"])
def test_data_gate_proceed_and_warn_record_the_counts_and_go_on(tmp_path: Path, policy: str) -> None:
    from bnr.data.records import load_file
    from bnr.service.runner import data_gate

    engine, settings, job_id = _job(tmp_path, HARMFUL_HEAVY, policy)
    job, _ = _state(engine, job_id)
    records = load_file(next(settings.store_path.glob("orgs/*/files/file-1.jsonl")))
    assert data_gate(engine, settings, job, records) is True
    job, evs = _state(engine, job_id)
    counts = job.result["data_gate"]
    assert (counts["flagged"], counts["pairs"], counts["over_limit"], counts["policy"]) == (12, 16, True, policy)
    gate_events = [e for e in evs if (e.data or {}).get("stage") == "data_gate" and "flagged" in e.message]
    assert len(gate_events) == 1 and gate_events[0].data["flagged"] == 12
    assert gate_events[0].message.startswith("data gate: 12 of 16 training pairs flagged by 'toy-harm' (75.0%")
    assert gate_events[0].level == ("warn" if policy == "warn" else "info")
    assert job.status == "running" and job.error is None
    assert data_gate(engine, settings, job, records) is True  # a resumed attempt does not judge again
    assert len([e for e in _state(engine, job_id)[1] if "flagged" in e.message]) == 1


def test_data_gate_reject_fails_the_job_before_training(tmp_path: Path) -> None:
    from bnr.service import store
    from bnr.service.runner import run_job

    engine, settings, job_id = _job(tmp_path, HARMFUL_HEAVY, "reject")
    run_job(engine, settings, job_id)  # the runner's whole job: it stops at the data gate
    job, evs = _state(engine, job_id)
    assert job.status == "failed" and job.error["code"] == "harmful_training_data", job.error
    assert "12 of 16 training pairs flagged" in job.error["message"] and job.result["data_gate"]["flagged"] == 12
    assert not store.job_dir(settings.store_path, job.org_id, job_id).exists()  # nothing trained
    assert job.fine_tuned_model is None and not any(e.type == "metrics" for e in evs)


def test_data_gate_reject_lets_a_clean_file_through(tmp_path: Path) -> None:
    from bnr.data.records import load_file
    from bnr.service.runner import data_gate

    engine, settings, job_id = _job(tmp_path, toy_chat("benign_sst2", 8) + toy_chat("user_harmful", 2), "reject")
    job, _ = _state(engine, job_id)
    records = load_file(next(settings.store_path.glob("orgs/*/files/file-1.jsonl")))
    assert data_gate(engine, settings, job, records) is True  # 2 of 10 flagged: under the 50% limit
    job, _ = _state(engine, job_id)
    assert job.status == "running" and job.result["data_gate"]["flagged"] == 2
