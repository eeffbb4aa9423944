"""`bnr-calibrated`: Buffer-and-Reinforce whose merge is chosen per job by `bnr calibrate`.

Trained exactly like `bnr` (the BufferLoRA frozen under the UserLoRA, then dropped). Finalize runs the
`calibrate` recipe on (this job's UserLoRA, the provider's ReinforceLoRA): it searches the user and reinforce
strengths, alpha and the reinforced layers (`calibrate.*`) on calibration sets disjoint from every evaluation
set, and writes the least over-refusing merge within the HS and FA bounds as a normal merge run at
`user.final_out` (its search table, Pareto plot, sample ids and cost in the run). The paper's merge is always
a candidate, so calibration never selects a point worse than it on the calibration data.

Source: this project (issue 13: decoupled merge strengths and a provider-side calibration); the merge itself
is the paper's QR soft projection (see `bnr.defenses.bnr`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from bnr.defenses.base import BUFFER, REINFORCE, UserJob, register
from bnr.defenses.bnr import Bnr


@register
class BnrCalibrated(Bnr):
    """Buffer-and-Reinforce with the merge strengths, alpha and layers chosen by `bnr calibrate` (calibrate.*)"""

    name = "bnr-calibrated"
    title = "BnR, calibrated merge"
    train_artifacts = (BUFFER,)
    final_artifacts = (REINFORCE,)
    final_reads: ClassVar[tuple[str, ...]] = ("merge", "calibrate", "eval")
    trains_like = "bnr"
    # 2: over-refusal ties within one binomial SE, hs_margin 0, safety-first fallback; 3: no evaluation per-source
    # limit on the calibration's harmful set (it had scored 88 of smollm2-sweep's 100 calibration prompts)
    final_revision = 3

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        from bnr.defenses.calibrate import calibrate

        cfg = job.cfg
        m = dataclasses.replace(
            cfg.merge, user=str(user_run), reinforce=str(job.providers[REINFORCE]), out=str(job.final_out)
        )
        return calibrate(dataclasses.replace(cfg, merge=m), own_user_run=True)
