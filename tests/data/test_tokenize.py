from __future__ import annotations

from pathlib import Path

from bnr.config import ModelConfig
from bnr.data.records import Record
from bnr.data.templates import build_prompt
from bnr.data.tokenize import IGNORE_INDEX, collate, encode_example, encode_records
from bnr.models import load_tokenizer


def test_alpaca_template_with_and_without_input() -> None:
    assert "### Input:" not in build_prompt("alpaca", Record(id="a", instruction="q"), None)
    p = build_prompt("alpaca", Record(id="a", instruction="q", input="ctx"), None)
    assert "### Input:\nctx\n\n### Response:\n" in p


def test_loss_only_on_response_plus_eos(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    rec = Record(id="a", instruction="say hello", output="hello there")
    ex = encode_example(tok, rec, "alpaca", 512)
    assert ex is not None
    target = [t for t in ex.labels if t != IGNORE_INDEX]
    assert target == tok("hello there", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex.input_ids[-len(target) :] == target
    assert ex.labels[: len(ex.input_ids) - len(target)] == [IGNORE_INDEX] * (len(ex.input_ids) - len(target))


def test_truncation_drops_records_without_target(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    rec = Record(id="a", instruction="say hello", output="hello there")
    assert encode_example(tok, rec, "alpaca", 8) is None
    assert len(encode_records(tok, [rec], "chat", 512)) == 1


def test_collate_pads_right_and_masks(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    exs = encode_records(
        tok,
        [
            Record(id="a", instruction="name a color", output="blue"),
            Record(id="b", instruction="say hello", output="hello there friend"),
        ],
        "alpaca",
        512,
    )
    batch = collate(exs, tok.pad_token_id)
    short = min(range(2), key=lambda i: len(exs[i].input_ids))
    n = len(exs[short].input_ids)
    assert batch["attention_mask"][short, n:].sum() == 0
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
