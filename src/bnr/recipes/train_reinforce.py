"""`bnr train-reinforce`: train the ReinforceLoRA on top of the merged, frozen BufferLoRA
(`bnr.defenses.providers.train_reinforce`)."""

from __future__ import annotations

from pathlib import Path

from bnr.config import Config
from bnr.defenses.providers import train_reinforce


def run(cfg: Config) -> Path:
    return train_reinforce(cfg)
