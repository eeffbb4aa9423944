"""The loss-landscape slice: its centre is the model's own loss, and the model is not modified."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bnr.analysis.grads import per_sample_loss
from bnr.analysis.landscape import loss_slice
from bnr.config import PAPER_TARGETS, DataConfig, ModelConfig
from bnr.data.sources import load_records
from bnr.data.tokenize import collate, encode_records
from bnr.models import load_model, load_tokenizer


def test_slice_centre_and_read_only(tiny_model_dir: Path, tiny_data: dict[str, Path]) -> None:
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), device="cpu")
    tok, model = load_tokenizer(cfg), load_model(cfg)
    examples = encode_records(tok, load_records(DataConfig(path=str(tiny_data["benign"])))[:4], "alpaca", 96)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ls = loss_slice(model, examples, PAPER_TARGETS, pad_id=tok.pad_token_id, steps=3, span=0.5, batch_size=2)
    with torch.no_grad():
        batch = collate(examples, tok.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        own = float(per_sample_loss(logits, batch["labels"]).mean())
    assert ls["center_loss"] == pytest.approx(own, rel=1e-5)
    assert len(ls["loss"]) == 3 and all(len(r) == 3 for r in ls["loss"])
    assert ls["loss"][0][0] != pytest.approx(own)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n])
