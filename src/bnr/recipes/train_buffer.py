"""`bnr train-buffer`: train the BufferLoRA (`bnr.defenses.providers.train_buffer`)"""

from __future__ import annotations

from pathlib import Path

from bnr.config import Config
from bnr.defenses import PROVIDERS
from bnr.defenses.base import BUFFER


def run(cfg: Config) -> Path:
    return PROVIDERS.get(BUFFER).run(cfg)  # its run records its stage key, so pipeline and sweep reuse it
