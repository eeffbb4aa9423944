"""All stages from one config under `out/` (default runs/pipeline): [align ->] the provider artifacts the
defense declares (e.g. buffer -> reinforce) -> user -> the defense's finalize (`final/`).

Every stage is reused while its resolved config section and its parents' content hashes are unchanged
(`bnr.runs.keys`) and rebuilt otherwise, so an interrupted pipeline resumes where it stopped and a
changed knob (say `buffer.train.lr`) redoes exactly the stages downstream of it; overwrite=true redoes all.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from bnr.config import Config
from bnr.orchestrate.providers import build_providers
from bnr.orchestrate.userjob import make_job, run_user_job
from bnr.recipes import align
from bnr.runs.keys import is_current

log = logging.getLogger(__name__)


def stage_paths(cfg: Config) -> Config:
    """Point the align, user and final outputs into one pipeline folder (providers are placed when built)."""
    root = Path(cfg.out or "runs/pipeline")
    user = str(root / "user")
    return dataclasses.replace(
        cfg,
        align=dataclasses.replace(cfg.align, out=str(root / "aligned")),
        user=dataclasses.replace(cfg.user, out=user, final_out=str(root / "final")),
        merge=dataclasses.replace(cfg.merge, user=user, out=str(root / "final")),
    )


def run(cfg: Config) -> Path:
    cfg = stage_paths(cfg)
    root = Path(cfg.out or "runs/pipeline")
    if cfg.align.enabled:
        if cfg.overwrite or not is_current(cfg.align.out, align.align_key(cfg)):
            align.run(dataclasses.replace(cfg, overwrite=True))  # its run records its key
        # the model before `align` is the unaligned half of the aligned pair (SafeLoRA, AsFT) unless given
        unaligned = cfg.model.unaligned or cfg.model.name_or_path
        cfg = dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, name_or_path=cfg.align.out, gguf_file=None, unaligned=unaligned),
        )
    needs = make_job(cfg).defense.requires
    cfg = build_providers(cfg, needs, lambda name, key: root / name, force=cfg.overwrite)
    _, deliverable = run_user_job(cfg, force=cfg.overwrite)
    log.info("pipeline done; deliverable: %s", deliverable)
    print(f"deliverable: {deliverable}")
    return deliverable
