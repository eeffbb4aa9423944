"""Check a config without loading any model: schema and ranges (done on load), registry names,
and that every dataset it names loads and is large enough."""

from __future__ import annotations

from pathlib import Path

from bnr.config import Config, DataConfig
from bnr.data.mix import harmful_count
from bnr.data.sources import load_records
from bnr.data.templates import TEMPLATES
from bnr.errors import BnrError
from bnr.merge import MERGE_METHODS


def _count(data: DataConfig, what: str, *, required: bool = False) -> int:
    """Records of `data` (loaded as the run would); -1 for an unset provider stage that only `pipeline` needs."""
    if data.source == "file" and not data.path and not required:
        print(f"  {what:<18} (not set; `pipeline` and its stage's command need it)")
        return -1
    n = len(load_records(data))
    print(f"  {what:<18} {data.source}:{data.path or ''} -> {n} records")
    return n


def _need(have: int, want: int | None, what: str) -> None:
    if have >= 0 and want is not None and want > have:
        raise BnrError(f"{what}: asked for {want} samples but the data has {have}; lower n or add data")


def run(cfg: Config) -> Path | None:
    TEMPLATES.get(cfg.template)
    from bnr.recipes.finetune import make_job

    job = make_job(cfg)  # the defense and its options (`defenses.<name>`) resolve, or a one-line error
    MERGE_METHODS.get(cfg.merge.method)
    print(f"model: {cfg.model.name_or_path or '(unset)'}; template: {cfg.template}; seed: {cfg.seed}")
    _need(_count(cfg.buffer.data, "buffer.data"), cfg.buffer.n, "buffer.n")
    _need(_count(cfg.reinforce.refusal_data, "refusal_data"), cfg.reinforce.n_refusal, "reinforce.n_refusal")
    _need(_count(cfg.reinforce.benign_data, "reinforce.benign"), cfg.reinforce.n_benign, "reinforce.n_benign")
    u = cfg.user
    n_h = harmful_count(u.n, u.p)
    _need(_count(u.benign_data, "user.benign_data", required=True), u.n - n_h, "user benign (n - round(p*n))")
    if n_h:
        _need(_count(u.harmful_data, "user.harmful_data", required=True), n_h, "user harmful (round(p*n))")
    print(f"user job: n={u.n} p={u.p} -> {n_h} harmful + {u.n - n_h} benign; defense={u.defense}")
    needs = ", ".join(job.defense.requires) or "none"
    print(f"  defense {job.defense.name}: provider artifacts {needs}; options {job.options}")
    for line in job.defense.check(job):
        print(f"  {line}")
    print("config OK")
    return None
