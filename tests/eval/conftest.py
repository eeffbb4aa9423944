"""Fixtures for the evaluation tests: the tiny model loaded once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of the shared tiny Llama, in eval mode."""
    from bnr.config import ModelConfig
    from bnr.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"))
    model.eval()
    return model, tok
