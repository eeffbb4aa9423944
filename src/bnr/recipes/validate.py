"""Check a config without loading any model weights: schema and ranges (done on load), registry names, that every
dataset it names loads and is large enough, and the base model (`bnr.model_check`: folder, target modules,
max_length)."""

from __future__ import annotations

from pathlib import Path

from bnr.attacks import get_attack
from bnr.config import Config, DataConfig
from bnr.data.mix import harmful_count
from bnr.data.sources import load_records
from bnr.data.templates import TEMPLATES
from bnr.defenses.base import BUFFER, Defense
from bnr.errors import BnrError
from bnr.merge import MERGE_METHODS
from bnr.model_check import check_model


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


def check_parents(cfg: Config, defense: Defense) -> None:
    """Every parent run the config names exists with the right role, or is written by one of its own stages."""
    from bnr.artifacts import is_complete
    from bnr.runs.opening import check_parent

    produced = {Path(p).resolve(): s for s, p in (("buffer", cfg.buffer.out), ("reinforce", cfg.reinforce.out))}
    produced |= {Path(cfg.user.out).resolve(): "user", Path(cfg.align.out).resolve(): "align"}
    needs = [("reinforce.buffer", cfg.reinforce.buffer, "buffer"), ("merge.user", cfg.merge.user, "user")]
    needs.append(("merge.reinforce", cfg.merge.reinforce, "reinforce"))
    if BUFFER in defense.train_artifacts:
        needs.append(("user.buffer", cfg.user.buffer, "buffer"))
    for key, path, role in needs:
        p = Path(path)
        plain_peft = key.startswith("merge.") and (p / "adapter_config.json").is_file() and not is_complete(p)
        if plain_peft:  # merge takes plain PEFT adapter folders too
            print(f"  {key:<18} {path} (a PEFT adapter folder)")
        elif p.exists():
            check_parent(p, role, key)
            print(f"  {key:<18} {path} ({role} run found)")
        elif produced.get(p.resolve()) == role:
            print(f"  {key:<18} {path} (written by this config's {role} stage)")
        else:
            raise BnrError(
                f"{key}={path!r}: missing parent run, and no stage of this config writes it; "
                "run the stage that makes it first or fix the path"
            )


def _check_lengths(cfg: Config) -> None:
    """Name (file:line) the records longer than max_length in tokens, as training will; needs only the tokenizer,
    and is skipped when it does not load here."""
    if not cfg.model.name_or_path:
        return
    from bnr.data.tokenize import over_long_report
    from bnr.models import load_tokenizer

    try:
        tokenizer = load_tokenizer(cfg.model)
    except (BnrError, OSError, ValueError):  # a model on another machine: validate never needs it
        print(f"  (lengths in tokens not checked: the tokenizer of {cfg.model.name_or_path!r} does not load here)")
        return
    sets = {"buffer.data": cfg.buffer.data, "refusal_data": cfg.reinforce.refusal_data}
    sets |= {"reinforce.benign": cfg.reinforce.benign_data, "user.benign_data": cfg.user.benign_data}
    if harmful_count(cfg.user.n, cfg.user.p):
        sets["user.harmful_data"] = cfg.user.harmful_data
    for what, data in sets.items():
        if data.source == "file" and not data.path:
            continue
        report = over_long_report(tokenizer, load_records(data), cfg.template, cfg.max_length)
        if report:
            print(f"  warning: {what}: {report}")


def run(cfg: Config) -> Path | None:
    TEMPLATES.get(cfg.template)
    from bnr.orchestrate.userjob import make_job

    job = make_job(cfg)  # the defense and its options (`defenses.<name>`) resolve, or a one-line error
    MERGE_METHODS.get(cfg.merge.method)
    print(f"model: {cfg.model.name_or_path or '(unset)'}; template: {cfg.template}; seed: {cfg.seed}")
    _need(_count(cfg.buffer.data, "buffer.data"), cfg.buffer.n, "buffer.n")
    _need(_count(cfg.reinforce.refusal_data, "refusal_data"), cfg.reinforce.n_refusal, "reinforce.n_refusal")
    _need(_count(cfg.reinforce.benign_data, "reinforce.benign"), cfg.reinforce.n_benign, "reinforce.n_benign")
    if cfg.reinforce.lookalike_data is not None:
        look = _count(cfg.reinforce.lookalike_data, "reinforce.lookalike")
        _need(look, cfg.reinforce.n_lookalike, "reinforce.n_lookalike")
    u = cfg.user
    n_h = harmful_count(u.n, u.p)
    _need(_count(u.benign_data, "user.benign_data", required=True), u.n - n_h, "user benign (n - round(p*n))")
    if n_h and get_attack(u.attack).uses_harmful:
        _need(_count(u.harmful_data, "user.harmful_data", required=True), n_h, "user harmful (round(p*n))")
    print(f"user job: n={u.n} p={u.p} -> {n_h} harmful + {u.n - n_h} benign; defense={u.defense}; attack={u.attack}")
    sample = load_records(u.benign_data)[:200] + (load_records(u.harmful_data)[:50] if n_h else [])
    for line in check_model(cfg, sample):
        print(f"  {line}")
    needs = ", ".join(job.defense.requires) or "none"
    print(f"  defense {job.defense.name}: provider artifacts {needs}; options {job.options}")
    for line in job.defense.check(job):
        print(f"  {line}")
    check_parents(cfg, job.defense)
    _check_lengths(cfg)
    print("config OK")
    return None
