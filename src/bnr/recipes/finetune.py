"""`bnr finetune`: a user fine-tuning job through its defense's hooks (`bnr.orchestrate.userjob`); prints the
deliverable."""

from __future__ import annotations

from pathlib import Path

from bnr.config import Config
from bnr.orchestrate.userjob import check_artifacts, finalize, make_job, train_user


def run(cfg: Config) -> Path:
    job = make_job(cfg)
    check_artifacts(job, job.defense.requires)  # fail before training, not after it
    deliverable = finalize(job, train_user(job))
    print(f"deliverable: {deliverable}")
    return deliverable
