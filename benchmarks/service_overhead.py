"""The service's overhead per toy job against the same user job run directly, the safety gate's cost against
the training it checks, and API read latency while jobs train; candidates interleaved in one run, medians.

    python benchmarks/service_overhead.py [--reps 3] [--n 32] [--reads 200] [--gate-limit 20]

- direct: `bnr finetune -c job.yaml` (a process, as a worker's job is), the very config the service builds
  for the job (`bnr.service.jobspec.job_config`);
- service: upload once, then create -> poll every 0.2 s -> succeeded, through the official `openai` SDK against a
  live `bnr serve --workers 1` (gate on): wall from create to succeeded, minus the gate's own wall time (the
  gate is reported on its own line);
- gate: the probe's wall time on the deliverable / the direct job's wall time;
- API latency: `--reads` concurrent GETs (32 threads; retrieve, events, list) while a job trains: p50 / p99.

Wall clock throughout (the service is several processes), so on a shared machine only the ratios mean much.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))

from svc_helpers import Service, base_settings, env, jsonl, toy_chat  # noqa: E402

HP = {"n_epochs": 1, "batch_size": 4}


def _direct(svc: Service, data: Path, records: int, work: Path) -> float:
    """The same user job as `bnr finetune` in a process of its own; its wall time."""
    from bnr.config import to_yaml
    from bnr.service.jobspec import job_config, resolve
    from bnr.service.settings import load_settings

    settings = load_settings(str(svc.config))
    policy = settings.base("toy-sft")
    assert policy is not None
    hp = resolve(policy, HP)
    cfg = job_config(policy, {}, hp, seed=1, data=data, work=work, save_every=settings.save_every)
    path = work.with_suffix(".yaml")
    path.write_text(to_yaml(cfg))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bnr", "finetune", "-q", "-c", str(path)], env=env(), check=True, capture_output=True
    )
    return time.perf_counter() - start


def _service_job(c: Any, file_id: str) -> tuple[float, float]:
    """(wall from create to succeeded minus the gate, the gate's wall) of one job."""
    start = time.perf_counter()
    job = c.fine_tuning.jobs.create(
        model="toy-sft",
        training_file=file_id,
        seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": HP}},
    )
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.2)
        job = c.fine_tuning.jobs.retrieve(job.id)
    wall = time.perf_counter() - start
    assert job.status == "succeeded", job.error
    gate = float(job.model_extra["bnr"]["safety"]["job"]["wall_s"])
    return wall - gate, gate


def _latency(c: Any, file_id: str, reads: int) -> list[float]:
    """Per-request wall times of `reads` concurrent GETs while a job trains."""
    job = c.fine_tuning.jobs.create(model="toy-sft", training_file=file_id, seed=2)
    while c.fine_tuning.jobs.retrieve(job.id).status != "running":
        time.sleep(0.2)
    calls = [
        lambda: c.fine_tuning.jobs.retrieve(job.id),
        lambda: c.fine_tuning.jobs.list_events(job.id),
        lambda: c.fine_tuning.jobs.list(limit=10),
    ]

    def timed(i: int) -> float:
        start = time.perf_counter()
        calls[i % len(calls)]()
        return time.perf_counter() - start

    with ThreadPoolExecutor(32) as pool:
        times = list(pool.map(timed, range(reads)))
    c.fine_tuning.jobs.cancel(job.id)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=32, help="records in the toy job's file")
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--gate-limit", type=int, default=20, help="prompts per gate benchmark")
    args = ap.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    root = Path(tempfile.mkdtemp(prefix="bnr-service-bench-"))
    gate = {"enabled": True, "limit": args.gate_limit, "batch_size": 32}
    svc = Service(root, f"sqlite:///{root / 'service.db'}", base_settings(root / "store", gate=gate))
    svc.write()
    svc.prepare("toy-sft")
    svc.org("bench")
    data = root / "train.jsonl"
    data.write_bytes(jsonl(toy_chat("benign_sst2", args.n)))
    svc.start(workers=1)
    direct, service, gates = [], [], []
    try:
        c = svc.client("bench")
        file_id = c.files.create(file=("train.jsonl", data.read_bytes()), purpose="fine-tune").id
        for rep in range(args.reps):  # interleaved: D S, S D, D S, ...
            order = ("direct", "service") if rep % 2 == 0 else ("service", "direct")
            for what in order:
                if what == "direct":
                    direct.append(_direct(svc, data, args.n, root / f"direct-{rep}"))
                else:
                    wall, g = _service_job(c, file_id)
                    service.append(wall)
                    gates.append(g)
        lat = sorted(_latency(c, file_id, args.reads))
    finally:
        svc.stop()
    d, s, g = statistics.median(direct), statistics.median(service), statistics.median(gates)
    print(f"toy user job, {args.n} records, {HP}; {args.reps} interleaved reps; medians, wall s")
    print(f"  direct (bnr finetune)        {d:8.2f}")
    print(f"  service (create->succeeded)  {s:8.2f}   overhead ratio {s / d:.2f} (target <= 1.10)")
    print(f"  safety gate ({args.gate_limit}+{args.gate_limit} prompts) {g:8.2f}   gate / training {g / d:.2f}")
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"  API reads during training: n={len(lat)} p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(f"  load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
