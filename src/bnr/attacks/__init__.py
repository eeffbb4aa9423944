"""Attacks by a fine-tuning customer behind one interface, chosen with `user.attack=NAME` (`bnr ls attacks`).

The interface is documented in `bnr.attacks.base`; each attack is one module here, listed in `MODULES` and
imported with this package, so its `@register` runs. The prompt framings they share are `bnr.attacks.framings`.
"""

from __future__ import annotations

import importlib

from bnr.attacks.base import (
    ATTACKS,
    DEFAULT_ATTACK,
    Attack,
    AttackData,
    AttackMix,
    Knobs,
    attack_key,
    attack_options,
    build_attack_mix,
    get_attack,
    register,
    train_config,
)

MODULES = ("harmful_mix", "jailbreak_tune", "backdoor_tune", "identity_shift", "benign_only", "harmful_shift")

for _m in MODULES:
    importlib.import_module(f"bnr.attacks.{_m}")

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACK",
    "Attack",
    "AttackData",
    "AttackMix",
    "Knobs",
    "attack_key",
    "attack_options",
    "build_attack_mix",
    "get_attack",
    "register",
    "train_config",
]
