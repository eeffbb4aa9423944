"""The config schema of a dataset (`DataConfig`): every stage, benchmark and calibration set names its data with
one. Assembled into the root config by `bnr.config`; plain dataclasses, no imports beyond the standard library."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """A dataset by registry name (`bnr ls datasets`): `file` (a local file or folder at `path`), `hub` or another."""

    source: str = "file"  # dataset registry name (bnr ls datasets)
    path: str | None = None  # file or folder (file source), hub id (hub source) or the source's local copy
    split: str | None = None  # dataset split, for hub sources
    subset: str | None = None  # the hub dataset's configuration name (load_dataset's `name`), e.g. main
    limit: int | None = None  # read at most this many records
    fields: dict[str, str] = field(default_factory=dict)  # column mapping, e.g. fields.instruction=prompt
    where: dict[str, list[str]] = field(default_factory=dict)  # keep rows whose field is one of these, e.g. label
    skip_per_source: int = 0  # drop the first k rows of every source (what an eval's per_source_limit=k leaves)
    output_text: str | None = None  # answer every record with this text (e.g. a refusal for a harmful prompt set)
