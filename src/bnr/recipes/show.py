"""`bnr config show -c PRESET [key=value ...]`: print the resolved config (preset, inherits and overrides applied,
validated) as YAML, exactly as a run would record it in its `config.yaml`."""

from __future__ import annotations

from bnr.config import Config, to_yaml


def run(cfg: Config) -> None:
    print(to_yaml(cfg), end="")
