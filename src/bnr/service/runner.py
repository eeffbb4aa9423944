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
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from bnr.config import GuardConfig
from bnr.service import events, store
from bnr.service.db import Checkpoint, Event, File, FineTunedModel, Job, PreparedBase, make_engine, new_id, session
from bnr.service.settings import ServiceSettings

log = logging.getLogger(__name__)
PAUSE_ENV = "BNR_SERVICE_PAUSE_AT"
RELEASED_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md", "chat_template.jinja")


def _settings() -> ServiceSettings:
    from bnr.config import parse_section
    from bnr.service.worker import SETTINGS_ENV

    return parse_section(ServiceSettings, json.loads(os.environ[SETTINGS_ENV]))


def stage(
    engine: Engine,
    job_id: str,
    name: str,
    message: str,
    progress: float | None = None,
    *,
    extra: dict[str, Any] | None = None,
    level: str = "info",
) -> None:
    """Enter stage `name` (or report in it): the job's stage and progress, and a message event."""
    with session(engine) as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        new = job.stage != name
        job.stage = name
        if progress is not None:
            job.progress = progress
        events.add(s, job, message, level=level, data={"stage": name, **(extra or {})})
    if new:
        pause_at(name)


def pause_at(name: str) -> None:
    """`BNR_SERVICE_PAUSE_AT=STAGE:SECONDS` in a worker's environment: each job waits that long when it enters STAGE
    (data_gate, training, finalizing, safety_gate), so tests can act while a short stage runs (e.g. cancel during
    finalize on the toy). Unset, nothing waits."""
    spec = os.environ.get(PAUSE_ENV, "")
    where, _, seconds = spec.partition(":")
    if spec and where == name:
        log.warning("%s: pausing %s s at stage %s", PAUSE_ENV, seconds, name)
        time.sleep(float(seconds or 0))


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


def _load(engine: Engine, job_id: str) -> tuple[Job, File, File | None, PreparedBase]:
    with session(engine, readonly=True) as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        data = s.execute(select(File).where(File.id == job.training_file)).scalar_one()
        valid = (
            s.execute(select(File).where(File.id == job.validation_file)).scalar_one() if job.validation_file else None
        )
        base = s.get(PreparedBase, job.model)
    if base is None:
        raise RuntimeError(f"base {job.model!r} is no longer prepared")
    return job, data, valid, base


SAFETY_KEYS = ("hs", "over_refusal", "wall_s")


def _base_numbers(
    engine: Engine, settings: ServiceSettings, base: PreparedBase, cfg: Any, valid: File | None, records: list[Any]
) -> dict[str, Any]:
    """The base's probe numbers, and its FA on the validation file when there is one: cached on the prepared base
    (FA by the file's sha256: the same for every job on the base), computed once where missing."""
    from bnr.service.gate import probe

    cached: dict[str, Any] = dict(base.safety or {})
    fa_by_file: dict[str, float] = dict(cached.get("fa_by_file") or {})
    need_safety = "hs" not in cached
    need_fa = valid is not None and valid.sha256 not in fa_by_file
    if need_safety or need_fa:
        got = probe(cfg, settings.gate, None, records if need_fa else None, safety=need_safety)
        with session(engine) as s:
            row = s.get(PreparedBase, base.name)
            current: dict[str, Any] = dict((row.safety if row is not None else None) or {})
            if need_safety:
                current.update({k: got[k] for k in SAFETY_KEYS})
            if need_fa and valid is not None:
                current["fa_by_file"] = {**(current.get("fa_by_file") or {}), valid.sha256: got["fa"]}
            if row is not None:
                row.safety = current
        cached, fa_by_file = current, dict(current.get("fa_by_file") or {})
    out = {k: cached[k] for k in SAFETY_KEYS if k in cached}
    if valid is not None:
        out["fa"] = fa_by_file[valid.sha256]
    return out


def data_gate(engine: Engine, settings: ServiceSettings, job: Job, records: list[Any]) -> bool:
    """The provider's judge over the training pairs before training: the counts as an event; under `warn` a warning
    above `max_harmful_share`, under `reject` the job fails (`harmful_training_data`). False when it failed."""
    from bnr.eval.judges import make_judge

    gate = settings.data_gate
    if (job.result or {}).get("data_gate"):  # a resumed attempt: checked already
        return True
    stage(engine, job.id, "data_gate", f"Checking the training pairs with the {gate.judge!r} judge", 0.02)
    judge = make_judge(gate.judge)
    prompts = [r.instruction + (f"\n{r.input}" if r.input else "") for r in records]
    flagged = sum(v.flagged for v in judge.judge(prompts, [r.output for r in records]))
    share = flagged / max(1, len(records))
    over = share > gate.max_harmful_share
    counts = {"flagged": flagged, "pairs": len(records), "share": round(share, 4), "judge": gate.judge}
    counts.update(policy=gate.policy, over_limit=over)
    line = (
        f"data gate: {flagged} of {len(records)} training pairs flagged by {gate.judge!r} ({100 * share:.1f}%, "
        f"limit {100 * gate.max_harmful_share:.1f}%, policy {gate.policy})"
    )
    if over and gate.policy == "reject":
        message = line + "; the job is rejected before training"
        _fail(engine, job.id, "harmful_training_data", message, {**(job.result or {}), "data_gate": counts})
        return False
    job.result = {**(job.result or {}), "data_gate": counts}
    with session(engine) as s:
        row = s.execute(select(Job).where(Job.id == job.id)).scalar_one()
        row.result = job.result
    warn = over and gate.policy == "warn"
    stage(
        engine,
        job.id,
        "data_gate",
        line + ("; proceeding, as the policy says" if warn else ""),
        extra=counts,
        level="warn" if warn else "info",
    )
    return True


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
    from bnr.data.records import load_file
    from bnr.service.gate import probe, verdict
    from bnr.service.jobspec import job_settings

    root = settings.store_path
    store.use_registry(root)
    job, data, valid, base = _load(engine, job_id)
    policy = settings.base(job.model)
    if policy is None:
        raise RuntimeError(f"base {job.model!r} is no longer offered")
    hp = job.hyperparameters
    work = store.job_dir(root, job.org_id, job.id)
    if not data_gate(engine, settings, job, load_file(root / data.path)):
        return
    cfg = job_settings(policy, settings.save_every)  # the model, template and probe the gate evaluates with
    total = -(-data.records // hp["batch_size"]) * hp["n_epochs"]
    deliverable = train_and_finalize(engine, settings, job, root / data.path, base.artifacts, total)
    from bnr.service.worker import EXECUTOR_ENV

    result: dict[str, Any] = {**(job.result or {}), "executor": os.environ.get(EXECUTOR_ENV, "local")}
    if settings.gate.enabled:
        stage(engine, job.id, "safety_gate", "Evaluating the deliverable on the safety probe", 0.95)
        records = load_file(root / valid.path) if valid is not None else []
        scores = probe(cfg, settings.gate, deliverable, records or None)
        base_scores = _base_numbers(engine, settings, base, cfg, valid, records)
        passed, line = verdict(scores, base_scores, settings.gate)
        result["safety"] = {"job": scores, "base": base_scores, "threshold": settings.gate.threshold, "passed": passed}
        if not passed:
            _fail(engine, job.id, "safety_evaluation_failed", line + "; the model is not released", result)
            shutil.rmtree(work, ignore_errors=True)
            return
        numbers = {f"{who}_{k}": v for who in ("job", "base") for k, v in result["safety"][who].items()}
        stage(engine, job.id, "safety_gate", line, extra=numbers)
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
    from bnr import plugins
    from bnr.errors import BnrError

    plugins.load()  # judges, benchmarks and `builtin:` models by name, as the CLI has them
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
