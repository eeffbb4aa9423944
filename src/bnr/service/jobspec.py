"""A job's bnr config, from the provider's policy for its base and the few knobs a tenant may set.

The provider's preset and overrides fix the defense, its options, the adapters' shape and the data handling;
the tenant's `n_epochs`, `batch_size`, `learning_rate_multiplier` and `seed` are checked against the base's job
API bounds (`job_api` in that config: one policy value, which `bnr attack-search` also draws within) and written
into `user.train`. The same `Config` is what `bnr finetune` would read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bnr.config import Config, deep_merge, from_dict, parse_overrides, read_yaml
from bnr.errors import BnrError
from bnr.service.errors import ApiError
from bnr.service.settings import VLLM_LORA_RANKS, BasePolicy

TENANT_KNOBS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def policy_config(policy: BasePolicy) -> Config:
    """The base's config as the provider fixed it (preset + overrides + defense), before any job."""
    data = deep_merge(read_yaml(policy.preset), parse_overrides(policy.overrides))
    data = deep_merge(data, {"user": {"defense": policy.defense}})
    return from_dict(data)


def _number(name: str, value: Any, kind: type) -> float | int | None:
    if value is None or value == "auto":
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not float(value).is_integer())
    ):
        raise ApiError(
            400,
            f"hyperparameters.{name} must be {kind.__name__} or 'auto' (got {value!r})",
            param=f"hyperparameters.{name}",
            code="invalid_value",
        )
    return kind(value)


def requested(body: dict[str, Any]) -> dict[str, Any]:
    """The tenant's hyperparameters from `method.supervised.hyperparameters` or the old top-level field."""
    method = body.get("method") or {}
    if method:
        kind = method.get("type", "supervised")
        if kind != "supervised":
            raise ApiError(
                400,
                f"method.type {kind!r} is not offered; this provider runs supervised jobs",
                param="method.type",
                code="unsupported_method",
            )
        hp = (method.get("supervised") or {}).get("hyperparameters") or {}
    else:
        hp = body.get("hyperparameters") or {}
    unknown = sorted(set(hp) - set(TENANT_KNOBS))
    if unknown:
        raise ApiError(
            400,
            f"hyperparameters {unknown} cannot be set; allowed: {', '.join(TENANT_KNOBS)}",
            param="hyperparameters",
            code="invalid_value",
        )
    return hp


def resolve(policy: BasePolicy, hp: dict[str, Any]) -> dict[str, Any]:
    """`auto` -> the provider's values; explicit values checked against the base's job API bounds (`job_api`)."""
    cfg = policy_config(policy)
    base = cfg.user.train
    n_epochs = _number("n_epochs", hp.get("n_epochs"), int)
    batch = _number("batch_size", hp.get("batch_size"), int)
    mult = _number("learning_rate_multiplier", hp.get("learning_rate_multiplier"), float)
    for name, value in (("n_epochs", n_epochs), ("batch_size", batch), ("learning_rate_multiplier", mult)):
        if not cfg.job_api.admits(name, value):
            low, high = cfg.job_api.bounds()[name]
            raise ApiError(
                400,
                f"hyperparameters.{name}={value} is out of range [{low}, {high}] on this base",
                param=f"hyperparameters.{name}",
                code="invalid_value",
            )
    return {
        "n_epochs": int(n_epochs if n_epochs is not None else base.epochs),
        "batch_size": int(batch if batch is not None else base.batch_size),
        "learning_rate_multiplier": float(mult if mult is not None else 1.0),
    }


def needed_rank(cfg: Config) -> int:
    """The vLLM `--max-lora-rank` the deliverable will need: the UserLoRA's rank, plus the ReinforceLoRA's when
    the defense merges it in (a QR merge is exactly a LoRA of rank r_U + r_R)."""
    from bnr.defenses import get_defense
    from bnr.defenses.base import REINFORCE

    rank = cfg.user.lora.r + (
        cfg.reinforce.lora.r if REINFORCE in get_defense(cfg.user.defense).final_artifacts else 0
    )
    return serving_rank(rank)


def serving_rank(rank: int) -> int:
    """The smallest vLLM-accepted `--max-lora-rank` that holds `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise BnrError(f"LoRA rank {rank} exceeds the largest rank vLLM serves ({VLLM_LORA_RANKS[-1]})")


def job_settings(policy: BasePolicy, save_every: int) -> Config:
    """The provider's settings for every job on `policy`'s base: its config, with the training checkpoint every
    `save_every` steps (what a requeued job resumes from) and a metrics record every step."""
    cfg = policy_config(policy)
    train = dataclasses.replace(cfg.user.train, save_every=save_every, log_every=1, progress=False)
    return dataclasses.replace(cfg, user=dataclasses.replace(cfg.user, train=train))


def job_config(
    policy: BasePolicy,
    artifacts: dict[str, str],
    hp: dict[str, Any],
    *,
    seed: int,
    data: Path,
    work: Path,
    save_every: int,
) -> Config:
    """The full config of one job, as `bnr.orchestrate.fine_tune` builds it from these arguments (what the direct
    benchmark runs with `bnr finetune`)."""
    from bnr.orchestrate import job_config as orchestrated

    return orchestrated(data, **job_arguments(policy, artifacts, hp, seed=seed, work=work, save_every=save_every))


def job_arguments(
    policy: BasePolicy, artifacts: dict[str, str], hp: dict[str, Any], *, seed: int, work: Path, save_every: int
) -> dict[str, Any]:
    """The keyword arguments of `bnr.orchestrate.fine_tune` / `job_config` for one job (everything but the data)."""
    from bnr.orchestrate import JobKnobs

    knobs = JobKnobs(
        n_epochs=hp["n_epochs"],
        batch_size=hp["batch_size"],
        learning_rate_multiplier=hp["learning_rate_multiplier"],
        seed=seed,
    )
    return {
        "out": work / "user",
        "final_out": work / "final",
        "defense": policy.defense,
        "providers": artifacts,
        "knobs": knobs,
        "settings": job_settings(policy, save_every),
        "resume": True,
    }
