"""`bnr train-buffer`: train the BufferLoRA (`bnr.defenses.providers.train_buffer`)"""

from __future__ import annotations

from pathlib import Path

from bnr.config import Config
from bnr.defenses.providers import train_buffer


def run(cfg: Config) -> Path:
    return train_buffer(cfg)
