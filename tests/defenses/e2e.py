"""Helpers for the per-defense tests: one defense through `pipeline` and `sweep`, and its hooks on a real model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bnr.artifacts import is_complete, read_manifest
from bnr.cli import main
from conftest import tiny_eval_overrides, tiny_overrides


def through_pipeline(model_dir: Path, data: dict[str, Path], root: Path, defense: str, *extra: str) -> Path:
    """`bnr pipeline` with `defense`; returns the deliverable (the user run or `final/`)."""
    over = tiny_overrides(model_dir, data, root)
    assert main(["pipeline", *over, f"user.defense={defense}", *extra]) == 0
    assert read_manifest(root / "user")["defense"] == defense
    return root / "final" if is_complete(root / "final") else root / "user"


def through_sweep(model_dir: Path, data: dict[str, Path], tmp: Path, defense: str, *extra: str, seeds: str = "[1]"):
    """A one-defense `bnr sweep` (providers built by the sweep); returns its result rows."""
    out = tmp / "sweep"
    argv = [
        "sweep",
        *tiny_overrides(model_dir, data, tmp / "unused"),
        *tiny_eval_overrides(data, tmp / "eval"),
        f"sweep.out={out}",
        f"sweep.defenses=[{defense}]",
        "sweep.p=[0.5]",
        f"sweep.seeds={seeds}",
        "sweep.n=[12]",
        "sweep.plots=false",
        *extra,
    ]
    assert main(argv) == 0
    rows: list[dict[str, Any]] = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["defense"] == defense and {"hs", "over_refusal", "fa"} <= set(r) for r in rows)
    return rows


def prepared(model_dir: Path, data: dict[str, Path], root: Path, defense: str, *extra: str) -> tuple[Any, ...]:
    """(job, model, tokenizer, examples) of a user job after `user_data` and `prepare_model`."""
    from bnr.config import load_config
    from bnr.data.mix import build_user_mix
    from bnr.data.sources import load_records
    from bnr.data.tokenize import encode_records
    from bnr.models import load_model_and_tokenizer
    from bnr.orchestrate.userjob import make_job

    cfg = load_config(None, [*tiny_overrides(model_dir, data, root), f"user.defense={defense}", *extra])
    job = make_job(cfg)
    mix = build_user_mix(
        load_records(cfg.user.benign_data), load_records(cfg.user.harmful_data), cfg.user.n, cfg.user.p, cfg.seed
    )
    records = job.defense.user_data(job, list(mix.records))
    model, tok = load_model_and_tokenizer(cfg.model, for_training=True)
    model = job.defense.prepare_model(job, model)
    return job, model, tok, encode_records(tok, records, cfg.template, cfg.max_length)


def lora_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def adapter_tensors(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter_model.safetensors"))
