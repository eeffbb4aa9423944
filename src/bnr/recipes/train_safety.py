"""Train the paper's safety LoRA: harmful prompt -> refusal on the plain aligned model (no buffer).

Its v = vec(B A) is the safety direction of the gradient analysis (`bnr analyze grads`). Where the aligned
model already refuses almost perfectly this adapter barely moves and its direction is mostly noise;
ReinforceLoRA is then the informative direction (docs/analysis.md).
"""

from __future__ import annotations

from pathlib import Path

from bnr import adapters
from bnr.config import Config
from bnr.runs.fit import train_sft_lora
from bnr.runs.keys import stage_key

STAGE = "safety"


def run(cfg: Config) -> Path:
    stage = cfg.analyze.safety
    key = stage_key(cfg, ("analyze.safety",), {})
    return train_sft_lora(cfg, stage, stage.out, STAGE, adapters.SAFETY, "safety refusal", "safety refusal", key)
