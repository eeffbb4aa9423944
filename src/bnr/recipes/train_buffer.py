"""Train the BufferLoRA: plain SFT on the provider's harmful set (the temporary jailbreak).

The run is marked `contains_buffer`, and its tensors go into the provider's buffer registry (`bnr.guard`), so
that merge and every export refuse it and any copy of it, whatever the files around them say.
"""

from __future__ import annotations

from pathlib import Path

from bnr import adapters
from bnr.config import Config
from bnr.recipes.common import train_sft_lora


def run(cfg: Config) -> Path:
    return train_sft_lora(
        cfg, cfg.buffer, cfg.buffer.out, "buffer", adapters.BUFFER, "buffer harmful", "provider harmful"
    )
