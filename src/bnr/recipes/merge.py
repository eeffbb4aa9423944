"""`bnr merge`: merge ReinforceLoRA into UserLoRA (QR soft projection, in factor space) and write a servable
adapter run (`bnr.runs.merge`)."""

from __future__ import annotations

from pathlib import Path

from bnr.config import Config
from bnr.runs.merge import merge_run


def run(cfg: Config) -> Path:
    return merge_run(cfg)
