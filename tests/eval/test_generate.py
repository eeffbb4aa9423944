from __future__ import annotations

from typing import Any

import torch

from bnr.eval.generate import generate, left_padded, trim_at_stop

PROMPTS = ["say hello", "what is two plus two and name a color", "name a color", "tell me to frizzle a wump"]


def test_batched_equals_one_at_a_time_and_keeps_order(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    tok.padding_side = "right"
    batched = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=4, progress=False)
    single = [generate(model, tok, [p], max_new_tokens=6, batch_size=1, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert tok.padding_side == "right"  # restored
    assert all(isinstance(c, str) for c in batched)


def test_stop_strings_are_trimmed(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    free = generate(model, tok, PROMPTS[:1], max_new_tokens=8, progress=False)[0]
    words = [w for w in free.split() if w]
    assert words, free
    stop = words[len(words) // 2]
    cut = generate(model, tok, PROMPTS[:1], max_new_tokens=8, stop=[stop], progress=False)[0]
    assert cut == free[: free.find(stop)]
    assert stop not in cut


def test_trim_and_empty() -> None:
    assert trim_at_stop("a ### b ## c", ["##", "###"]) == "a "
    assert trim_at_stop("abc", None) == "abc"


def test_empty_prompt_list(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    assert generate(model, tok, [], progress=False) == []


def test_left_padding_is_the_tokenizers(tiny_lm: tuple[Any, Any]) -> None:
    """Prompts are tokenized once and padded per batch: the same tensors the tokenizer's own left padding makes."""
    _, tok = tiny_lm
    tok.padding_side = "left"
    want = tok(PROMPTS, return_tensors="pt", padding=True)
    got = left_padded(tok(PROMPTS)["input_ids"], tok.pad_token_id, torch.device("cpu"))
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(
        got["attention_mask"], want["attention_mask"]
    )
    assert int(got["attention_mask"].sum()) < got["attention_mask"].numel()  # some rows were padded
