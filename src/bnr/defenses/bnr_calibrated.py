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
from dataclasses import dataclass, field
from pathlib import Path

from bnr.config import CalibrateConfig, EvalConfig
from bnr.defenses.base import BUFFER, FINALIZE_ONLY, REINFORCE, UserJob, from_section, register
from bnr.defenses.bnr import Bnr, MergeOptions, merge_config
from bnr.locations import location_fields


@dataclass
class CalibratedOptions(MergeOptions):
    """`merge`, `calibrate`, `eval`: the merge it starts from, the search, and the evaluation settings it scores
    with (defaults: those sections). `revision`: the selection rule's version, not settable (2: over-refusal ties
    within one binomial SE, hs_margin 0, safety-first fallback; 3: no evaluation per-source limit on the
    calibration's harmful set, which had scored 88 of smollm2-sweep's 100 calibration prompts)."""

    calibrate: CalibrateConfig | None = from_section("calibrate", finalize_only=True)
    eval: EvalConfig | None = from_section("eval", finalize_only=True)
    revision: int = field(default=3, init=False, metadata={FINALIZE_ONLY: True})


@register
class BnrCalibrated(Bnr):
    """Buffer-and-Reinforce with the merge strengths, alpha and layers chosen by `bnr calibrate` (calibrate.*)"""

    name = "bnr-calibrated"
    title = "BnR, calibrated merge"
    train_artifacts = (BUFFER,)
    final_artifacts = (REINFORCE,)
    options_class = CalibratedOptions
    trains_like = "bnr"

    def finalize(self, job: UserJob, user_run: Path) -> Path:
        from bnr.defenses.calibrate import calibrate

        opts: CalibratedOptions = job.options
        assert opts.calibrate is not None and opts.eval is not None  # filled in by options_for
        cfg = dataclasses.replace(merge_config(job, user_run), calibrate=opts.calibrate)
        # the evaluation settings the search scores with; where this job's evaluation writes stays the job's
        ev = dataclasses.replace(opts.eval, **{f: getattr(cfg.eval, f) for f in location_fields(cfg.eval)})
        return calibrate(dataclasses.replace(cfg, eval=ev), own_user_run=True)
