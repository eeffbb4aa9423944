"""Defenses behind one interface, chosen by name with `user.defense=NAME` (`bnr ls defenses`).

The interface (hooks, options, provider artifacts) is documented in `bnr.defenses.base`; each defense is one
module here, listed in `MODULES` and imported with this package, so its `@register` runs
(`providers` registers bnr's own provider stages, buffer and reinforce, in `bnr.runs.providers`).
"""

from __future__ import annotations

import importlib

from bnr.defenses.base import (
    BUFFER,
    DEFENSES,
    REINFORCE,
    Defense,
    NoOptions,
    UserJob,
    add_user_adapter,
    attach_buffer,
    canonical_name,
    get_defense,
    options_for,
    register,
)
from bnr.runs.providers import PROVIDERS, Provider, register_provider

MODULES = (
    "providers",
    "sft",
    "safeinstruct",
    "bnr",
    "security_vectors",
    "lisa",
    "ldifs",
    "panacea",
    "safelora",
    "antidote",
    "asft",
    "bnr_calibrated",
    "vaccine",
    "booster",
    "repnoise",
    "t_vaccine",
)

for _m in MODULES:
    importlib.import_module(f"bnr.defenses.{_m}")

__all__ = [
    "BUFFER",
    "DEFENSES",
    "PROVIDERS",
    "REINFORCE",
    "Defense",
    "NoOptions",
    "Provider",
    "UserJob",
    "add_user_adapter",
    "attach_buffer",
    "canonical_name",
    "get_defense",
    "options_for",
    "register",
    "register_provider",
]
