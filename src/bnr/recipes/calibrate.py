"""`bnr calibrate`: choose a merge's strengths, alpha and layers on calibration sets and write it as a merge run
(the search is `bnr.defenses.calibrate`, which `bnr-calibrated`'s finalize runs too)."""

from __future__ import annotations

from pathlib import Path

from bnr.config import Config
from bnr.defenses.calibrate import calibrate


def run(cfg: Config) -> Path:
    return calibrate(cfg)
