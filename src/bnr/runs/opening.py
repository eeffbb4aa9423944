"""Opening runs: the partial folder of a stage, the resume guard, parent checks and the manifest's provenance.

`open_run` opens (and on resume checks, by its stage key) a run folder and seeds the run; `check_parent` /
`check_same_base` check a parent run's role and base model; `manifest_for` is the provenance every stage records.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnr.artifacts import read_manifest
from bnr.config import Config, ModelConfig, to_yaml
from bnr.errors import BnrError
from bnr.locations import without_locations
from bnr.models import model_identity
from bnr.runs.writer import RunWriter


def open_run(cfg: Config, out: str, stage: str, key: str | Callable[[], str] | None = None) -> RunWriter:
    """Open the run's partial folder, check a resumed checkpoint against the stage key, and seed the run.

    `key` is the run's stage key (`bnr.runs.keys.stage_key`; a callable is called only when no key was set for
    `out` by `bnr.runs.keys.keyed`, which takes precedence); the manifest records it. A stage that trains must
    give one: a checkpoint resumes only when its recorded key matches.

    Seeding here, before the model and its LoRA are built, makes LoRA init, dropout and the data order
    depend on `cfg.seed` alone, so two identical runs are bitwise equal on CPU.

    In a launched job rank 0 opens (and checks) the folder first, then the other ranks (`distributed.main_first`),
    so a bad `out=` stops every rank with rank 0's message and the others see the folder rank 0 prepared.
    """
    from bnr import distributed
    from bnr.runs.keys import check_resumable
    from bnr.runs.writer import key_for
    from bnr.seeding import seed_everything

    if callable(key):  # a key set for `out` by an orchestrator wins: compute ours only without one
        key = key_for(out) or key()

    def opened() -> RunWriter:
        writer = RunWriter(out, stage, overwrite=cfg.overwrite, resume=cfg.resume, key=key)
        check_resumable(writer)
        writer.write_config(to_yaml(cfg))
        return writer

    writer = distributed.main_first(opened)
    seed_everything(cfg.seed)
    return writer


STAGE_COMMANDS = {
    "buffer": "train-buffer",
    "reinforce": "train-reinforce",
    "user": "finetune",
    "merge": "merge",
    "align": "align",
    "safety": "train-safety",
    "eval": "eval",
}


def check_parent(
    path: str | Path, expected: str, what: str, model: ModelConfig | None = None, *, content: bool = False
) -> dict[str, Any]:
    """The manifest of parent run `path` after checking its role, its base and (for a buffer) its content.

    `expected` is the stage the parent must come from (`bnr train-buffer` makes a "buffer" run, ...);
    `what` is the config key that named it, used in the error. With `model`, the parent must have been
    trained on the same base, compared by content hash (so `builtin:toy` equals its resolved folder). With
    `content`, a buffer parent must also be a buffer by its tensors (the provider's buffer registry), so an
    edited manifest cannot turn a user run into a buffer.
    """
    manifest = read_manifest(path)
    stage = manifest.get("stage")
    if stage != expected:
        made_by = f" (made by `bnr {STAGE_COMMANDS[stage]}`)" if stage in STAGE_COMMANDS else ""
        raise BnrError(
            f"{what}={str(path)!r} is a {stage!r} run{made_by}, but {what} expects a {expected!r} run "
            f"(made by `bnr {STAGE_COMMANDS.get(expected, expected)}`); point {what} to the right run"
        )
    if model is not None:
        _check_base(path, manifest.get("base_model") or {}, model)
    if content and expected == "buffer":
        from bnr import guard

        guard.require_registered_buffer(path, what)
    return manifest


def _base_key(ident: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two bases the same: their files' content (configs and weights) for a local folder, else hub id
    and revision. A manifest from before weights were hashed (`weight_files`: sizes) matches no local base."""
    if ident.get("local_hash"):
        weights = ident.get("weight_sha256")
        return ("local", ident.get("local_hash"), tuple(sorted(weights.items())) if weights else None)
    return ("hub", ident.get("name_or_path"), ident.get("revision"), ident.get("gguf_file"))


def _check_base(parent: str | Path, theirs: dict[str, Any], model: ModelConfig) -> None:
    if not theirs.get("name_or_path"):
        return
    ours = model_identity(model)
    if _base_key(theirs) != _base_key(ours):
        old = " (its manifest predates weight content hashes: retrain it)" if theirs.get("weight_files") else ""
        raise BnrError(
            f"run {str(parent)!r} was trained on base {theirs.get('name_or_path')!r}, not {model.name_or_path!r} "
            f"(their content hashes differ{old}); use adapters trained on the same base"
        )


def check_same_base(parent: str | Path, model: ModelConfig) -> dict[str, Any]:
    """The parent run's manifest, after checking it was trained on the same base model (by content hash)."""
    manifest = read_manifest(parent)
    _check_base(parent, manifest.get("base_model") or {}, model)
    return manifest


def config_hash(cfg: Config) -> str:
    """Hash of the resolved config without the fields its schema marks as outputs (`bnr.locations.output`: `out`,
    `final_out`, at any depth), so the same computation written elsewhere has the same hash. Recorded in the
    manifest for provenance; stage reuse goes by `bnr.runs.keys.stage_key`, which leaves every location out."""
    from bnr.artifacts import hash_json

    return hash_json(without_locations(cfg, ("output",)))


def manifest_for(
    cfg: Config,
    *,
    parents: list[tuple[str, str]],
    data: dict[str, Any],
    training: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Provenance shared by every stage: parents ((role, path); the writer adds each one's content hash), base
    model, seed, config hash, data manifest."""

    return {
        "parents": [{"role": role, "path": str(Path(p).resolve())} for role, p in parents],
        "base_model": model_identity(cfg.model),
        "seed": cfg.seed,
        "template": cfg.template,
        "max_length": cfg.max_length,
        "config_hash": config_hash(cfg),
        "data": data,
        "training": training or {},
        **extra,
    }
