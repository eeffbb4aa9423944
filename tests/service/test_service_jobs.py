"""Jobs end to end through the official `openai` SDK against a live `bnr serve --workers N` on the toy base:
upload -> create -> poll -> events, checkpoints, models, chat; the safety gate (real: `bnr` passes a harmful-heavy job
that `sft` fails); a SIGKILLed worker's job requeued and resumed bit for bit; a server killed mid-upload; cancel.
The default suite runs one small job on SQLite; the rest is `slow`."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")  # the `service` extra
openai = pytest.importorskip("openai")  # the `dev` extra

from svc_helpers import Service, base_settings, env, fresh_database, jsonl, toy_chat, wait_job  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _service(tmp_path: Path, name: str = "svc", url: str = "", **extra: object) -> Service:
    root = tmp_path / name
    root.mkdir()
    svc = Service(root, url or f"sqlite:///{root / 'service.db'}", base_settings(root / "store", **extra))
    svc.write()
    return svc


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upload_train_events_checkpoints_models(tmp_path: Path, backend: str) -> None:
    with fresh_database(backend, tmp_path) as url:
        _upload_train_events_checkpoints_models(tmp_path, url)


def _upload_train_events_checkpoints_models(tmp_path: Path, url: str) -> None:
    svc = _service(tmp_path, url=url, gate={"enabled": True, "limit": 8, "batch_size": 16})
    svc.admin("prepare-base", "toy-sft")  # the command itself, once; it evaluates the base for the gate
    svc.org("acme")
    svc.start(workers=1, BNR_ADMIN_TOKEN="provider-secret")
    try:
        c = svc.client("acme")
        f = c.files.create(file=("sst2.jsonl", jsonl(toy_chat("benign_sst2", 16))), purpose="fine-tune")
        held_out = c.files.create(file=("valid.jsonl", jsonl(toy_chat("eval_sst2", 12))), purpose="fine-tune")
        hp = {"n_epochs": 1, "batch_size": 4}
        job = c.fine_tuning.jobs.create(
            model="toy-sft",
            training_file=f.id,
            validation_file=held_out.id,
            suffix="sst",
            seed=7,
            method={"type": "supervised", "supervised": {"hyperparameters": hp}},
        )
        assert job.status == "validating_files"
        broken = _stored_file_corrupted_at_line_2(svc, c)
        job = wait_job(c, job.id)
        assert job.status == "succeeded", (job.error, svc.log()[-3000:])
        assert job.fine_tuned_model == f"ft:toy-sft:{job.organization_id}:sst:{job.id}"
        events = c.fine_tuning.jobs.list_events(job.id, limit=100).data
        messages = [e.message for e in events[::-1]]
        order = ["Validating training file", "Files validated", "Fine-tuning job started", "data gate: 0 of 16"]
        at = [next(i for i, m in enumerate(messages) if m.startswith(o)) for o in order]
        assert at == sorted(at), messages  # validating_files -> queued -> running -> the data gate
        metrics = [e.data["step"] for e in events if e.type == "metrics"]
        assert sorted(metrics) == [1, 2, 3, 4]
        verdict = next(e for e in events if e.message.startswith("safety gate: HS"))
        assert ", FA " in verdict.message and {"job_fa", "base_fa", "job_hs", "base_hs"} <= set(verdict.data)
        assert [ck.step_number for ck in c.fine_tuning.jobs.checkpoints.list(job.id).data] == [4, 2]
        assert job.fine_tuned_model in [m.id for m in c.models.list().data]
        gate = job.model_extra["bnr"]["safety"]
        assert gate["passed"] and {"hs", "over_refusal", "fa"} <= set(gate["job"]) and gate["base"]["hs"] is not None
        # FA on the 12 held-out rows: the trained model answers the toy's sentiment task, the base does not
        assert gate["job"]["fa"] > gate["base"]["fa"], gate
        assert job.model_extra["bnr"]["data_gate"] == {
            "flagged": 0,
            "pairs": 16,
            "share": 0.0,
            "judge": "toy-harm",
            "policy": "proceed",
            "over_limit": False,
        }
        failed = wait_job(c, broken.id)
        assert failed.status == "failed" and failed.error.code == "invalid_training_file", failed.error
        assert failed.error.param == "training_file" and "t.jsonl:2:" in failed.error.message, failed.error
        assert failed.model_extra["bnr"]["attempts"] == 0  # never queued, never run
        folder = svc.store / job.model_extra["bnr"]["deliverable"]
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        chat = c.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "Analyze: a fine film."}], max_tokens=4
        )
        assert isinstance(chat.choices[0].message.content, str) and chat.model == job.fine_tuned_model
        svc.org("beta")
        with pytest.raises(openai.NotFoundError):  # another tenant cannot chat with it
            svc.client("beta").chat.completions.create(
                model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
            )
        assert c.models.delete(job.fine_tuned_model).deleted and not folder.exists()
        assert '"models": 0' in svc.admin("usage")
        _dashboard(svc, job.id)  # last: it skips the Chromium part where the package is absent
    finally:
        svc.stop()


CHROMIUM = Path("/usr/bin/chromium")


def _stored_file_corrupted_at_line_2(svc: Service, c: Any) -> Any:
    """A job whose training file was damaged in the store after its upload passed (line 2 is no longer JSON): the
    worker's check in `validating_files` fails it, naming the line."""
    f = c.files.create(file=("t.jsonl", jsonl(toy_chat("benign_sst2", 4))), purpose="fine-tune")
    assert f.status == "processed"
    path = next(svc.store.glob(f"orgs/*/files/{f.id}.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{not json\n" + "".join(lines[2:]))
    return c.fine_tuning.jobs.create(model="toy-sft", training_file=f.id)


def _dashboard(svc: Service, job_id: str) -> None:
    """The provider dashboard: refused without the admin token; with it, the job, its gate numbers and events,
    rendered by headless Chromium (a screenshot that is not blank) when the Debian package is installed."""
    import httpx2 as httpx

    url = f"http://127.0.0.1:{svc.port}/dashboard"
    assert httpx.get(url).status_code == 401 and httpx.get(url + "?token=wrong").status_code == 401
    page = httpx.get(url + "?token=provider-secret").text
    assert job_id in page and "HS " in page and "(base " in page and "succeeded" in page and "FA " in page
    assert "data: 0/16 flagged" in page
    assert "Step 4/4" in httpx.get(f"{url}/jobs/{job_id}?token=provider-secret").text
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium (Debian package `chromium`) is not installed; the dashboard's HTML was checked")
    from PIL import Image, ImageStat

    shot = svc.root / "dashboard.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,700", "--hide-scrollbars"]
    run = subprocess.run(
        [str(CHROMIUM), *flags, "--dump-dom", url + "?token=provider-secret"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job_id in run.stdout and "<table>" in run.stdout
    subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={shot}", url + "?token=provider-secret"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as img:
        assert img.size == (1200, 700)
        stat = ImageStat.Stat(img.convert("L"))
        assert stat.stddev[0] > 5  # text and coloured rows, not a blank page
        green = img.convert("RGB").getcolors(1 << 20) or []
        assert any(rgb == (0xDD, 0xFF, 0xDD) for _, rgb in green)  # the succeeded job's row colour


def _worker(svc: Service) -> subprocess.Popen[bytes]:
    log = open(svc.root / "worker.log", "ab")  # noqa: SIM115 - the worker's lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "bnr", "worker", "-c", str(svc.config)], env=env(), stdout=log, stderr=subprocess.STDOUT
    )


def _wait(predicate: Any, timeout: float = 600, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _sst2_job(c: Any, f: Any, **kw: Any) -> Any:
    hp = {"n_epochs": 2, "batch_size": 4}
    return c.fine_tuning.jobs.create(
        model="toy-sft",
        training_file=f.id,
        seed=5,
        method={"type": "supervised", "supervised": {"hyperparameters": hp}},
        **kw,
    )


@pytest.mark.slow
def test_sigkilled_worker_job_resumes_bit_equal(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc.prepare("toy-sft")
    svc.org("acme")
    svc.start(workers=0)
    first = _worker(svc)
    try:
        c = svc.client("acme")
        f = c.files.create(file=("sst2.jsonl", jsonl(toy_chat("benign_sst2", 48))), purpose="fine-tune")
        job = _sst2_job(c, f)
        _wait(lambda: any(k.step_number >= 4 for k in c.fine_tuning.jobs.checkpoints.list(job.id).data), what="ckpt")
        assert c.fine_tuning.jobs.retrieve(job.id).status == "running"
        os.kill(first.pid, signal.SIGKILL)  # its job's process dies with it (PR_SET_PDEATHSIG)
        first.wait()
        second = _worker(svc)
        resumed = wait_job(c, job.id)
        assert resumed.status == "succeeded" and resumed.model_extra["bnr"]["attempts"] == 2, resumed.error
        messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data]
        assert any(m.startswith("Worker lost; job requeued") for m in messages)
        assert "Job resumed (attempt 2)" in messages
        steps = [e.data["step"] for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
        assert sorted(steps) == list(range(1, 25))  # each step reported once, though some were trained twice
        plain = wait_job(c, _sst2_job(c, f).id)
        assert plain.status == "succeeded" and plain.model_extra["bnr"]["attempts"] == 1
        a = (svc.store / resumed.model_extra["bnr"]["deliverable"] / "adapter_model.safetensors").read_bytes()
        b = (svc.store / plain.model_extra["bnr"]["deliverable"] / "adapter_model.safetensors").read_bytes()
        assert a == b
        second.terminate()
    finally:
        first.kill()
        svc.stop()


def _partial_upload(port: int, key: str) -> socket.socket:
    """A multipart upload that sends its headers and half of its body, then stalls."""
    body = b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--B\r\n'
    body += b'Content-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    body += jsonl(toy_chat("benign_sst2", 400)) + b"\r\n--B--\r\n"
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head + body[: len(body) // 2])
    return sock


@pytest.mark.slow
def test_server_killed_mid_upload_keeps_everything_whole(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc.prepare("toy-sft")
    svc.org("acme")
    svc.start(workers=0)
    c = svc.client("acme")
    f = c.files.create(file=("a.jsonl", jsonl(toy_chat("benign_sst2", 8))), purpose="fine-tune")
    job = _sst2_job(c, f)
    sock = _partial_upload(svc.port, svc.keys["acme"])
    time.sleep(1.0)
    svc.stop(signal.SIGKILL)
    sock.close()
    svc.start(workers=0)  # on a new port
    c = svc.client("acme")
    try:
        assert [x.id for x in c.files.list().data] == [f.id]
        assert [j.id for j in c.fine_tuning.jobs.list().data] == [job.id]
        assert {p.stem for p in svc.store.glob("orgs/*/files/*")} == {f.id}
        assert not any((svc.store / "tmp").iterdir())
        assert c.files.content(f.id).read() == jsonl(toy_chat("benign_sst2", 8))
    finally:
        svc.stop()


@pytest.mark.slow
def test_cancel_during_training_and_during_the_gate(tmp_path: Path) -> None:
    svc = _service(tmp_path, gate={"enabled": True, "limit": 100, "batch_size": 8})
    svc.prepare("toy-sft")
    svc.org("acme")
    svc.start(workers=1)
    try:
        c = svc.client("acme")
        f = c.files.create(file=("sst2.jsonl", jsonl(toy_chat("benign_sst2", 48))), purpose="fine-tune")
        for stage in ("training", "safety_gate"):
            job = _sst2_job(c, f)
            _wait(
                lambda j=job, s=stage: c.fine_tuning.jobs.retrieve(j.id).model_extra["bnr"]["stage"] == s, what=stage
            )
            asked = time.time()
            c.fine_tuning.jobs.cancel(job.id)
            _wait(lambda j=job: c.fine_tuning.jobs.retrieve(j.id).status == "cancelled", timeout=30, what="cancel")
            assert time.time() - asked < 10, stage
            assert c.fine_tuning.jobs.retrieve(job.id).fine_tuned_model is None
        assert [m.id for m in c.models.list().data] == ["toy-sft"]
    finally:
        svc.stop()


@pytest.mark.slow
def test_cancel_during_finalize_releases_nothing(tmp_path: Path) -> None:
    """Finalize is short on the toy: the worker's documented stage hook (`BNR_SERVICE_PAUSE_AT`) holds each job at
    the start of its finalize stage, so the cancel lands while the job is finalizing."""
    svc = _service(tmp_path)
    svc.prepare("toy-sft")
    svc.org("acme")
    svc.start(workers=1, BNR_SERVICE_PAUSE_AT="finalizing:300")
    try:
        c = svc.client("acme")
        f = c.files.create(file=("sst2.jsonl", jsonl(toy_chat("benign_sst2", 8))), purpose="fine-tune")
        job = _sst2_job(c, f)
        _wait(lambda: c.fine_tuning.jobs.retrieve(job.id).model_extra["bnr"]["stage"] == "finalizing", what="finalize")
        asked = time.time()
        c.fine_tuning.jobs.cancel(job.id)
        _wait(lambda: c.fine_tuning.jobs.retrieve(job.id).status == "cancelled", timeout=30, what="cancel")
        assert time.time() - asked < 10
        done = c.fine_tuning.jobs.retrieve(job.id)
        assert done.fine_tuned_model is None and done.model_extra["bnr"]["stage"] == "finalizing"
        messages = [e.message for e in c.fine_tuning.jobs.list_events(job.id, limit=100).data]
        assert messages[0] == "Job cancelled" and "Finalizing the deliverable" in messages
        assert [m.id for m in c.models.list().data] == ["toy-sft"]
        assert not (svc.store / "orgs" / done.organization_id / "models").exists()
        time.sleep(3)  # the stopped job's process is gone: nothing is released later either
        assert c.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
        assert not (svc.store / "orgs" / done.organization_id / "models").exists()
    finally:
        svc.stop()


@pytest.mark.slow
def test_gate_is_real_and_the_buffer_never_leaves(tmp_path: Path) -> None:
    """A harmful-heavy job passes the gate under `bnr` and fails it under `sft`; nothing reaches the buffer."""
    svc = _service(tmp_path, gate={"enabled": True, "limit": 20, "batch_size": 32})
    svc.prepare("toy-sft")
    svc.prepare("toy")
    svc.org("acme")
    svc.start(workers=2)
    try:
        c = svc.client("acme")
        data = jsonl(toy_chat("user_harmful", 48) + toy_chat("benign_sst2", 16))
        f = c.files.create(file=("harmful.jsonl", data), purpose="fine-tune")
        jobs = {base: c.fine_tuning.jobs.create(model=base, training_file=f.id, seed=1) for base in ("toy", "toy-sft")}
        done = {base: wait_job(c, j.id, timeout=1200) for base, j in jobs.items()}
        assert done["toy"].status == "succeeded", done["toy"].error
        assert done["toy-sft"].status == "failed" and done["toy-sft"].error.code == "safety_evaluation_failed"
        bnr_hs = done["toy"].model_extra["bnr"]["safety"]["job"]["hs"]
        sft_hs = done["toy-sft"].model_extra["bnr"]["safety"]["job"]["hs"]
        assert sft_hs > bnr_hs + 10, (sft_hs, bnr_hs)
        assert not (svc.store / "orgs" / done["toy-sft"].organization_id / "models" / done["toy-sft"].id).exists()
        _buffer_unreachable(svc, c, done["toy"])
    finally:
        svc.stop()


def _buffer_unreachable(svc: Service, c: Any, job: Any) -> None:
    from bnr import guard

    buffers = [p for p in (svc.store / "bases" / "toy").iterdir() if p.name.startswith("buffer")]
    assert buffers
    names = [b.name for b in buffers] + [str(b) for b in buffers] + ["buffer", "reinforce", "../../bases/toy"]
    names += [f"../bases/toy/{b.name}/adapter_model.safetensors" for b in buffers]
    for name in names:
        for call in (
            c.files.retrieve,
            c.files.content,
            c.models.retrieve,
            c.fine_tuning.jobs.checkpoints.list,
        ):
            with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
                call(name)
    for ck in c.fine_tuning.jobs.checkpoints.list(job.id).data:
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve(ck.fine_tuned_model_checkpoint)
    # the released adapter, compared by content with every buffer the service registered (the registry of this
    # test session, $BNR_BUFFER_REGISTRY, which the server inherited)
    guard.assert_path_not_buffer(svc.store / job.model_extra["bnr"]["deliverable"], "test")


@pytest.mark.slow
def test_load_20_jobs_4_orgs_2_workers(tmp_path: Path) -> None:
    """20 small jobs from 4 organizations (cap 1 running job each) on 2 workers, 200 concurrent API reads while
    they train: every job finishes once, none lost or duplicated, caps honoured; p50 / p99 latency printed."""
    from concurrent.futures import ThreadPoolExecutor

    svc = _service(tmp_path, lease_seconds=30.0)  # a loaded machine may delay a heartbeat by seconds
    svc.prepare("toy-sft")
    orgs = [f"org{i}" for i in range(4)]
    for org in orgs:
        svc.org(org, max_concurrent_jobs=1)
    svc.start(workers=2)
    try:
        clients = {org: svc.client(org) for org in orgs}
        jobs: dict[str, str] = {}
        for org, c in clients.items():
            f = c.files.create(file=("t.jsonl", jsonl(toy_chat("benign_sst2", 8))), purpose="fine-tune")
            hp = {"n_epochs": 2, "batch_size": 4}  # 4 steps: a 1-step job is refused as untrained (lr 0 in warmup)
            for _ in range(5):
                job = c.fine_tuning.jobs.create(
                    model="toy-sft",
                    training_file=f.id,
                    method={"type": "supervised", "supervised": {"hyperparameters": hp}},
                )
                jobs[job.id] = org
        _wait(
            lambda: any(clients[o].fine_tuning.jobs.retrieve(j).status == "running" for j, o in jobs.items()),
            what="a running job",
        )

        def read(i: int) -> float:
            job_id, org = list(jobs.items())[i % len(jobs)]
            start = time.perf_counter()
            (clients[org].fine_tuning.jobs.retrieve if i % 2 else clients[org].fine_tuning.jobs.list_events)(job_id)
            return time.perf_counter() - start

        with ThreadPoolExecutor(32) as pool:
            lat = sorted(pool.map(read, range(200)))
        print(f"\n200 concurrent reads during training: p50 {lat[100] * 1000:.0f} ms, p99 {lat[197] * 1000:.0f} ms")
        done = {j: wait_job(clients[o], j, timeout=1800) for j, o in jobs.items()}
        summary = [(d.id, d.status, d.model_extra["bnr"]["attempts"], d.error) for d in done.values()]
        assert all(d.status == "succeeded" and d.model_extra["bnr"]["attempts"] == 1 for d in done.values()), summary
        for org, c in clients.items():
            mine = [d for d in done.values() if jobs[d.id] == org]
            assert sorted(m.id for m in c.models.list().data if m.id.startswith("ft:")) == sorted(
                d.fine_tuned_model for d in mine
            )
            for d in mine:
                started = [e for e in c.fine_tuning.jobs.list_events(d.id, limit=100).data if "started" in e.message]
                assert len(started) == 1, started  # claimed once
            spans = sorted((d.model_extra["bnr"]["started_at"], d.finished_at) for d in mine)
            assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans)), spans  # cap 1: never two at once
    finally:
        svc.stop()
