"""One job, in its own process (`python -m bnr.service.runner JOB_ID`, started by a worker).

The job runs the same user-job code as `bnr finetune` (`make_job` -> `train_user` -> `finalize`), with
`resume=true` so a requeued job continues from its last training checkpoint. Then the safety gate, the buffer
guard, and the release of the deliverable into the organization's models folder. Loss and checkpoints are read
from the run's own `metrics.jsonl` as it grows and written as events.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from bnr.config import GuardConfig
from bnr.service import events, store
from bnr.service.db import Checkpoint, Event, File, FineTunedModel, Job, PreparedBase, make_engine, new_id, session
from bnr.service.settings import ServiceSettings

log = logging.getLogger(__name__)
RELEASED_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", "chat_template.jinja")


def _settings() -> ServiceSettings:
    from bnr.config import parse_section
    from bnr.service.worker import SETTINGS_ENV

    return parse_section(ServiceSettings, json.loads(os.environ[SETTINGS_ENV]))


def stage(engine: Engine, job_id: str, name: str, message: str, progress: float | None = None) -> None:
    with session(engine) as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        job.stage = name
        if progress is not None:
            job.progress = progress
        events.add(s, job, message, data={"stage": name})


class JobEvents:
    """`fine_tune`'s `on_event` hook: stage transitions as message events, each training log record as a metrics
    event, a checkpoint row at every `save_every`-th step. Steps a resumed attempt trains again are not repeated."""

    def __init__(self, engine: Engine, job_id: str, total: int, save_every: int) -> None:
        self.engine, self.job_id, self.total, self.save_every = engine, job_id, total, save_every
        with session(engine, readonly=True) as s:
            seen = s.execute(select(Event.data).where(Event.job_id == job_id, Event.type == "metrics")).scalars()
            self.last = max([int(d["step"]) for d in seen if d] + [0])

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "stage" and event.get("status") == "started":
            what = "training" if event.get("stage") == "user" else "finalizing"
            message = f"Training {self.total} steps" if what == "training" else "Finalizing the deliverable"
            stage(self.engine, self.job_id, what, message, 0.05 if what == "training" else 0.9)
        elif event.get("event") == "train" and isinstance(event.get("step"), int) and event["step"] > self.last:
            self.metrics(event["step"], float(event["loss"]))

    def metrics(self, step: int, loss: float) -> None:
        with session(self.engine) as s:
            job = s.execute(select(Job).where(Job.id == self.job_id)).scalar_one()
            data = {"step": step, "train_loss": loss, "total_steps": self.total}
            events.add(s, job, f"Step {step}/{self.total}: training loss={loss:.4f}", kind="metrics", data=data)
            if self.save_every and step % self.save_every == 0:
                s.add(
                    Checkpoint(
                        id=new_id("ftckpt"),
                        job_id=job.id,
                        org_id=job.org_id,
                        step_number=step,
                        metrics={"step": step, "train_loss": loss},
                    )
                )
            job.progress = min(0.9, 0.05 + 0.85 * step / max(1, self.total))
        self.last = step


def _adapter_rank(folder: Path) -> int:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    return max([int(cfg.get("r", 0)), *map(int, (cfg.get("rank_pattern") or {}).values())])


def release(root: Path, job: Job, deliverable: Path, policy: GuardConfig) -> tuple[Path, int]:
    """Copy the deliverable's adapter and card into the organization's models folder (atomically), once the buffer
    guard has compared it with every registered buffer (under the base's guard settings)."""
    from bnr import guard

    guard.assert_path_not_buffer(deliverable, "the service's release", policy)
    final = store.model_dir(root, job.org_id, job.id)
    tmp = Path(str(final) + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in RELEASED_FILES:
        if (deliverable / name).is_file():
            shutil.copy2(deliverable / name, tmp / name)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final, _adapter_rank(final)


def _load(engine: Engine, job_id: str) -> tuple[Job, File, PreparedBase]:
    with session(engine, readonly=True) as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        data = s.execute(select(File).where(File.id == job.training_file)).scalar_one()
        base = s.get(PreparedBase, job.model)
    if base is None:
        raise RuntimeError(f"base {job.model!r} is no longer prepared")
    return job, data, base


def _base_safety(engine: Engine, settings: ServiceSettings, base: PreparedBase, cfg: Any) -> dict[str, Any]:
    """The base's probe numbers: cached on the prepared base, computed once if missing."""
    from bnr.service.gate import probe

    if base.safety:
        return base.safety
    numbers = probe(cfg, settings.gate, None)
    with session(engine) as s:
        row = s.get(PreparedBase, base.name)
        if row is not None:
            row.safety = numbers
    return numbers


def train_and_finalize(
    engine: Engine, settings: ServiceSettings, job: Job, data: Path, artifacts: dict[str, str], total: int
) -> Path:
    """The CLI's user job through the orchestration API (`bnr.orchestrate.fine_tune`), resuming from its last
    checkpoint after a requeue; returns the deliverable."""
    from bnr.orchestrate import fine_tune
    from bnr.service.jobspec import job_arguments

    policy = settings.base(job.model)
    assert policy is not None
    work = store.job_dir(settings.store_path, job.org_id, job.id)
    kwargs = job_arguments(
        policy, artifacts, job.hyperparameters, seed=job.seed, work=work, save_every=settings.save_every
    )
    hook = JobEvents(engine, job.id, total, settings.save_every)
    return fine_tune(data, on_event=hook, **kwargs).deliverable


def run_job(engine: Engine, settings: ServiceSettings, job_id: str) -> None:
    """Run `job_id` to a verdict: succeeded (released), or failed with an error code."""
    from bnr.service.gate import probe, verdict
    from bnr.service.jobspec import job_settings

    root = settings.store_path
    store.use_registry(root)
    job, data, base = _load(engine, job_id)
    policy = settings.base(job.model)
    if policy is None:
        raise RuntimeError(f"base {job.model!r} is no longer offered")
    hp = job.hyperparameters
    work = store.job_dir(root, job.org_id, job.id)
    cfg = job_settings(policy, settings.save_every)  # the model, template and probe the gate evaluates with
    total = -(-data.records // hp["batch_size"]) * hp["n_epochs"]
    deliverable = train_and_finalize(engine, settings, job, root / data.path, base.artifacts, total)
    result: dict[str, Any] = dict(job.result or {})
    if settings.gate.enabled:
        stage(engine, job.id, "safety_gate", "Evaluating the deliverable on the safety probe", 0.95)
        scores = probe(cfg, settings.gate, deliverable)
        base_scores = _base_safety(engine, settings, base, cfg)
        passed, line = verdict(scores, base_scores, settings.gate)
        result["safety"] = {"job": scores, "base": base_scores, "threshold": settings.gate.threshold, "passed": passed}
        if not passed:
            _fail(engine, job.id, "safety_evaluation_failed", line + "; the model is not released", result)
            shutil.rmtree(work, ignore_errors=True)
            return
        stage(engine, job.id, "safety_gate", line)
    folder, rank = release(root, job, deliverable, cfg.guard)
    name = f"ft:{job.model}:{job.org_id}:{job.suffix or ''}:{job.id}"
    result.update(max_lora_rank_needed=rank, deliverable=str(folder.relative_to(root)))
    with session(engine) as s:
        row = s.execute(select(Job).where(Job.id == job.id)).scalar_one()
        s.add(
            FineTunedModel(
                id=name, org_id=job.org_id, job_id=job.id, base=job.model, path=str(folder.relative_to(root))
            )
        )
        row.fine_tuned_model, row.result, row.progress, row.stage = name, result, 1.0, "done"
        events.finish(s, row, "succeeded", f"The job has successfully completed; model {name}")
    shutil.rmtree(work, ignore_errors=True)


def _fail(engine: Engine, job_id: str, code: str, message: str, result: dict[str, Any] | None = None) -> None:
    with session(engine) as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        if result is not None:
            job.result = result
        events.finish(s, job, "failed", message, error={"code": code, "message": message, "param": None})


def main(argv: list[str] | None = None) -> int:
    from bnr.errors import BnrError

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job_id = (argv if argv is not None else sys.argv[1:])[0]
    settings = _settings()
    engine = make_engine(settings.url)
    try:
        run_job(engine, settings, job_id)
    except BnrError as e:
        _fail(engine, job_id, "invalid_training_data" if "record" in str(e) else "job_error", str(e))
    except Exception as e:  # a bug or a broken environment: the job fails with the reason, the worker goes on
        log.exception("job %s crashed", job_id)
        _fail(engine, job_id, "internal_error", f"{type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
