"""`bnr train-reinforce`: train the ReinforceLoRA on top of the merged, frozen BufferLoRA
(`bnr.defenses.providers.train_reinforce`)."""

from __future__ import annotations

from pathlib import Path

from bnr.config import Config
from bnr.defenses import PROVIDERS
from bnr.defenses.base import REINFORCE


def run(cfg: Config) -> Path:
    return PROVIDERS.get(REINFORCE).run(cfg)  # its run records its stage key, so pipeline and sweep reuse it
