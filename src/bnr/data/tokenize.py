"""Tokenized, response-only-masked examples and padded batches for causal-LM training."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from bnr.data.records import Record, check_outputs
from bnr.data.templates import build_prompt, uses_special_tokens
from bnr.errors import BnrError

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    id: str


def encode_prompt(tokenizer: Any, prompt: str, template: str) -> list[int]:
    ids: list[int] = tokenizer(prompt, add_special_tokens=uses_special_tokens(template))["input_ids"]
    return ids


def encode_example(tokenizer: Any, record: Record, template: str, max_length: int) -> Example | None:
    """Prompt tokens masked with -100, target = response + eos; None if truncation leaves no target token."""
    prompt_ids = encode_prompt(tokenizer, build_prompt(template, record, tokenizer), template)
    response_ids = tokenizer(record.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    if all(t == IGNORE_INDEX for t in labels):
        return None
    return Example(ids, labels, record.id)


def over_long_report(tokenizer: Any, records: list[Record], template: str, max_length: int) -> str | None:
    """One line naming the records (file:line) longer than `max_length` tokens: those whose prompt fills it are
    dropped from training, the others lose the end of their response. None when every record fits."""
    dropped: list[str] = []
    cut: list[str] = []
    for r in records:
        n_prompt = len(encode_prompt(tokenizer, build_prompt(template, r, tokenizer), template))
        n = n_prompt + len(tokenizer(r.output, add_special_tokens=False)["input_ids"]) + 1
        if n > max_length:
            (dropped if n_prompt >= max_length else cut).append(f"{r.origin or r.id} ({n} tokens)")
    if not dropped and not cut:
        return None
    parts = []
    if dropped:
        parts.append(f"{len(dropped)} dropped (the prompt fills it): {', '.join(dropped[:3])}")
    if cut:
        parts.append(f"{len(cut)} with the response cut: {', '.join(cut[:3])}")
    more = " ..." if len(dropped) > 3 or len(cut) > 3 else ""
    return f"{len(dropped) + len(cut)} of {len(records)} records are longer than max_length={max_length}; " + (
        "; ".join(parts) + more
    )


def encode_records(tokenizer: Any, records: list[Record], template: str, max_length: int) -> list[Example]:
    """Encode every record; records whose response is cut off entirely by max_length are dropped. Over-long
    records are reported with their file and line."""
    check_outputs(records)
    out = []
    for r in records:
        ex = encode_example(tokenizer, r, template, max_length)
        if ex is not None:
            out.append(ex)
    if any(len(e.input_ids) >= max_length for e in out) or len(out) < len(records):
        report = over_long_report(tokenizer, records, template, max_length)
        if report:
            log.warning("%s", report)
    if not out:
        raise BnrError(f"no trainable examples: every prompt is longer than max_length={max_length}; raise it")
    return out


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with attention mask; padded label positions are -100."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
