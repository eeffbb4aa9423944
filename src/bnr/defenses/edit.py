"""Shared by the defenses whose finalize edits the trained UserLoRA's factors (SafeLoRA projects, Antidote
prunes): write the edited adapter as a run directory at `job.final_out`, everything not edited bit-identical."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bnr.artifacts import read_manifest
from bnr.defenses.base import UserJob
from bnr.lora_files import LoraModule, rewrite_lora


def write_edited_adapter(
    job: UserJob, user_run: Path, stage: str, replaced: dict[str, LoraModule], **extra: Any
) -> Path:
    """A run directory at `job.final_out` (stage `stage`): the UserLoRA of `user_run` with the factors of the
    modules in `replaced` swapped in; parents = the user run and the provider artifacts finalize read."""
    from bnr.runs.opening import manifest_for, open_run

    user_manifest = read_manifest(user_run)
    # the deliverable is prompted like the UserLoRA it came from
    cfg = dataclasses.replace(job.cfg, template=user_manifest.get("template", job.cfg.template))
    writer = open_run(cfg, str(job.final_out), stage)
    rewrite_lora(user_run, writer.tmp, replaced)
    parents = [("user", str(user_run))] + [(n, str(job.providers[n])) for n in job.defense.final_artifacts]
    manifest = manifest_for(
        cfg,
        parents=parents,
        data={},
        defense=job.defense.name,
        defense_options=dataclasses.asdict(job.options),
        contains_buffer=False,
        **extra,
    )
    return writer.finalize(manifest)
