from __future__ import annotations

from pathlib import Path

import pytest

from bnr.config import ModelConfig
from bnr.errors import BnrError
from bnr.models import load_model, load_tokenizer, model_identity


def test_loads_local_folder_with_dtype(tiny_model_dir: Path) -> None:
    import torch

    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="bfloat16", device="cpu"))
    assert next(model.parameters()).dtype == torch.bfloat16
    tok = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert tok.pad_token is not None
    ident = model_identity(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert ident["local_hash"] and len(ident["weight_sha256"]["model.safetensors"]) == 64


def test_gradient_checkpointing_option(tiny_model_dir: Path) -> None:
    model = load_model(ModelConfig(name_or_path=str(tiny_model_dir), gradient_checkpointing=True), for_training=True)
    assert model.is_gradient_checkpointing


def test_missing_model_is_clear(tmp_path: Path) -> None:
    with pytest.raises(BnrError, match="does not exist"):
        load_model(ModelConfig(name_or_path=str(tmp_path / "nope")))
    with pytest.raises(BnrError, match="is empty"):
        load_tokenizer(ModelConfig())
