"""The service's API with the official `openai` SDK against a live `bnr serve` (no worker: no training here),
on SQLite and on a Postgres database of its own: files, job creation, bad input, idempotency, isolation, keys."""

from __future__ import annotations

import httpx2 as httpx
import pytest

pytest.importorskip("fastapi")  # the `service` extra
openai = pytest.importorskip("openai")  # the `dev` extra

from svc_helpers import Service, database_fixture, jsonl, service_fixture, toy_chat  # noqa: E402, F401 - fixtures

GOOD = jsonl(toy_chat("benign_sst2", 8))


def _ready(service: Service, *orgs: str) -> None:
    service.prepare("toy-sft")  # plain LoRA: no provider artifacts; the gate is off in these tests
    for org in orgs:
        service.org(org)
    service.start()


def _stored_files(service: Service) -> set[str]:
    return {p.stem for p in service.store.glob("orgs/*/files/*.jsonl")}


def test_files_and_bad_uploads(service: Service) -> None:
    _ready(service, "acme")
    c = service.client("acme", max_retries=0)
    f = c.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    assert (f.status, f.bytes, f.filename) == ("processed", len(GOOD), "train.jsonl")
    assert c.files.retrieve(f.id).id == f.id and c.files.content(f.id).read() == GOOD
    bad = {
        "not JSONL": b"this is not json\n",
        "wrong schema": jsonl([{"question": "hi", "answer": "yo"}]),
        "empty": b"",
        "binary": b"PK\x03\x04\x00\x00garbage",
    }
    for what, data in bad.items():
        got = c.files.create(file=(f"{what}.jsonl", data), purpose="fine-tune")
        assert got.status == "error" and got.status_details, what
        assert f"{what}.jsonl" in got.status_details and str(service.store) not in got.status_details, got
        if what in ("not JSONL", "wrong schema"):
            assert f"{what}.jsonl:1:" in got.status_details, got  # the line
    with pytest.raises(openai.APIStatusError) as e:
        c.files.create(file=("big.jsonl", b"x" * 200_001), purpose="fine-tune")
    assert e.value.status_code == 413 and e.value.body["code"] == "file_too_large"
    for name in ("../evil.jsonl", "a/b.jsonl", "a\\b.jsonl"):
        with pytest.raises(openai.BadRequestError) as e:
            c.files.create(file=(name, GOOD), purpose="fine-tune")
        assert e.value.body["param"] == "file", name
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("t.jsonl", GOOD), purpose="assistants")
    listed = {x.id for x in c.files.list().data}
    assert len(listed) == 5 and _stored_files(service) == listed  # every stored file recorded, nothing half
    assert not any((service.store / "tmp").iterdir())
    assert c.files.delete(f.id).deleted and f.id not in _stored_files(service)


def test_job_create_errors_idempotency_and_cancel(service: Service) -> None:
    _ready(service, "acme")
    c = service.client("acme", max_retries=0)
    f = c.files.create(file=("t.jsonl", GOOD), purpose="fine-tune")
    broken = c.files.create(file=("b.jsonl", b"{}\n"), purpose="fine-tune")
    cases = [
        ({"model": "gpt-9", "training_file": f.id}, "model"),
        ({"model": "toy", "training_file": f.id}, "model"),  # offered but not prepared
        ({"model": "toy-sft", "training_file": "file-nope"}, "training_file"),
        ({"model": "toy-sft", "training_file": broken.id}, "training_file"),
        ({"model": "toy-sft", "training_file": f.id, "hyperparameters": {"n_epochs": 99}}, "hyperparameters.n_epochs"),
        (
            {
                "model": "toy-sft",
                "training_file": f.id,
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 1e3}}},
            },
            "hyperparameters.learning_rate_multiplier",
        ),
        ({"model": "toy-sft", "training_file": f.id, "method": {"type": "dpo"}}, "method.type"),
        ({"model": "toy-sft", "training_file": f.id, "suffix": "no spaces"}, "suffix"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(**kwargs)
        assert e.value.body["param"] == param, (kwargs, e.value.body)
        assert e.value.response.headers["x-should-retry"] == "false"
    assert c.fine_tuning.jobs.list().data == []  # nothing stored half
    headers = {"Idempotency-Key": "abc-1"}
    one = c.fine_tuning.jobs.create(model="toy-sft", training_file=f.id, seed=3, extra_headers=headers)
    two = c.fine_tuning.jobs.create(model="toy-sft", training_file=f.id, seed=3, extra_headers=headers)
    assert one.id == two.id and one.status == "validating_files" and one.seed == 3  # no worker here to check it
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model="toy-sft", training_file=f.id, seed=4, extra_headers=headers)
    assert e.value.body["code"] == "idempotency_key_reused"
    ids = [c.fine_tuning.jobs.create(model="toy-sft", training_file=f.id).id for _ in range(3)]
    pages = c.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in pages.data] == ids[::-1][:2] and pages.has_more
    assert [j.id for j in pages.get_next_page().data] == [ids[0], one.id]
    assert [j.id for j in c.fine_tuning.jobs.list(limit=100).data] == [*ids[::-1], one.id]
    assert c.fine_tuning.jobs.cancel(one.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.cancel(one.id)
    messages = [e.message for e in c.fine_tuning.jobs.list_events(one.id).data]
    assert messages[0].startswith("Job cancelled") and len(messages) == 2
    with pytest.raises(openai.BadRequestError):
        c.files.delete(f.id)  # used by queued jobs


def test_tenant_isolation_and_keys(service: Service) -> None:
    _ready(service, "acme", "beta")
    a, b = service.client("acme", max_retries=0), service.client("beta", max_retries=0)
    f = a.files.create(file=("t.jsonl", GOOD), purpose="fine-tune")
    job = a.fine_tuning.jobs.create(model="toy-sft", training_file=f.id)
    calls = [
        lambda: b.files.retrieve(f.id),
        lambda: b.files.content(f.id),
        lambda: b.files.delete(f.id),
        lambda: b.fine_tuning.jobs.retrieve(job.id),
        lambda: b.fine_tuning.jobs.cancel(job.id),
        lambda: b.fine_tuning.jobs.list_events(job.id),
        lambda: b.fine_tuning.jobs.checkpoints.list(job.id),
        lambda: b.models.retrieve(f"ft:toy-sft:x::{job.id}"),
        lambda: b.models.delete(f"ft:toy-sft:x::{job.id}"),
        lambda: b.chat.completions.create(
            model=f"ft:toy-sft:x::{job.id}", messages=[{"role": "user", "content": "hi"}]
        ),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    assert b.files.list().data == [] and b.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.BadRequestError):  # A's file is not B's training file
        b.fine_tuning.jobs.create(model="toy-sft", training_file=f.id)
    assert [m.id for m in b.models.list().data] == ["toy-sft"]
    with pytest.raises(openai.PermissionDeniedError):
        b.models.delete("toy-sft")
    for key in ("", "Bearer nope", "Basic abc"):
        r = httpx.get(f"http://127.0.0.1:{service.port}/v1/files", headers={"authorization": key})
        assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    _keys_nowhere_in_clear(service)


def _keys_nowhere_in_clear(service: Service) -> None:
    """The keys appear neither in the database nor in the store nor in the server's log."""
    from sqlalchemy import text

    from bnr.service.db import make_engine

    dump = service.log()
    with make_engine(service.url).connect() as conn:
        for table in ("orgs", "api_keys", "files", "jobs", "events"):
            dump += repr(conn.execute(text(f"SELECT * FROM {table}")).all())
    for path in service.store.rglob("*"):
        if path.is_file():
            dump += path.read_bytes().decode("latin-1")
    assert service.keys and not any(key in dump for key in service.keys.values())
