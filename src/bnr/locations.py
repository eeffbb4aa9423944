"""Path fields, marked in the config schema: where a stage writes its run or reads a run by path.

A field declared with `output(...)` says where a stage writes (`out`, `final_out`); one declared with `source(...)`
says where a stage reads a parent run, an artifact or a cache (`user.buffer`, `merge.user`, `eval.target`,
`eval.cache`, ...). Neither says what the stage computes, so a stage key leaves both out (a parent enters its
key by content hash, `bnr.runs.keys`), and the manifest's `config_hash` leaves the outputs out (the same
computation written elsewhere has the same hash). The schema is the one place that says which fields these are.

This module imports nothing of bnr's, so every schema (the root config, a plug-in's section, a defense's options)
can mark its fields.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

__all__ = ["LOCATION", "location_fields", "output", "source", "without_locations"]

LOCATION = "bnr_location"  # field metadata: "output" (where a stage writes) or "source" (where it reads by path)
Kind = Literal["output", "source"]
BOTH: tuple[Kind, ...] = ("output", "source")


def output(default: str | None) -> Any:
    """A field that says where a stage writes its run."""
    return dataclasses.field(default=default, metadata={LOCATION: "output"})


def source(default: str | None) -> Any:
    """A field that says where a stage reads a run, an artifact or a cache by path."""
    return dataclasses.field(default=default, metadata={LOCATION: "source"})


def location_fields(obj: Any, kinds: tuple[Kind, ...] = BOTH) -> list[str]:
    """The names of the dataclass `obj`'s own fields marked as a location of one of `kinds`."""
    return [f.name for f in dataclasses.fields(obj) if f.metadata.get(LOCATION) in kinds]


def without_locations(obj: Any, kinds: tuple[Kind, ...] = BOTH) -> Any:
    """`obj` as `dataclasses.asdict` gives it, without the fields marked as a location of one of `kinds`, at
    every depth (a value that is not a dataclass is copied as it is)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: without_locations(getattr(obj, f.name), kinds)
            for f in dataclasses.fields(obj)
            if f.metadata.get(LOCATION) not in kinds
        }
    if isinstance(obj, list | tuple):
        return type(obj)(without_locations(v, kinds) for v in obj)
    if isinstance(obj, dict):
        return {k: without_locations(v, kinds) for k, v in obj.items()}
    return copy.deepcopy(obj)
