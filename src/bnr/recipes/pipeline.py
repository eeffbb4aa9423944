"""All stages from one config: [align ->] buffer -> reinforce -> user -> merge, under `out/` (default runs/pipeline).

Stages already complete are reused (their manifests are checked), so an interrupted pipeline resumes
where it stopped; pass overwrite=true to redo everything.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from bnr.artifacts import is_complete
from bnr.config import Config
from bnr.defenses import DEFENSES
from bnr.recipes import align, finetune, train_buffer, train_reinforce

log = logging.getLogger(__name__)


def stage_paths(cfg: Config) -> Config:
    """Point every stage's out and parent paths into one pipeline folder (and at the aligned base, if any)."""
    root = Path(cfg.out or "runs/pipeline")
    a, b, r, u, m = (str(root / s) for s in ("aligned", "buffer", "reinforce", "user", "merged"))
    return dataclasses.replace(
        cfg,
        align=dataclasses.replace(cfg.align, out=a),
        buffer=dataclasses.replace(cfg.buffer, out=b),
        reinforce=dataclasses.replace(cfg.reinforce, out=r, buffer=b),
        user=dataclasses.replace(cfg.user, out=u, buffer=b),
        merge=dataclasses.replace(cfg.merge, out=m, user=u, reinforce=r),
    )


def run(cfg: Config) -> Path:
    cfg = stage_paths(cfg)
    if cfg.align.enabled:
        if not is_complete(cfg.align.out) or cfg.overwrite:
            align.run(cfg)
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, name_or_path=cfg.align.out, gguf_file=None)
        )
    defense = DEFENSES.get(cfg.user.defense)
    steps = [
        ("buffer", cfg.buffer.out, train_buffer.run, defense.uses_buffer or defense.merge_reinforce),
        ("reinforce", cfg.reinforce.out, train_reinforce.run, defense.merge_reinforce),
        ("user", cfg.user.out, finetune.run, True),
        ("merge", cfg.merge.out, defense.finalize_run, defense.merge_reinforce),
    ]
    last = Path(cfg.user.out)
    for name, out, step, needed in steps:
        if not needed:
            continue
        if is_complete(out) and not cfg.overwrite:
            log.info("%s: complete run found at %s, reusing it", name, out)
        else:
            step(cfg)
        last = Path(out)
    log.info("pipeline done; deliverable: %s", last)
    print(f"deliverable adapter: {last}")
    return last
