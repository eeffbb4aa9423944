"""Answer extraction and matching for the task benchmarks, as the field's scripts do it (and a clean variant)."""

from __future__ import annotations

import math
import re
from typing import Literal

from bnr.data.sources import GSM8K_ANSWER_PREFIX

_NUMBER = re.compile(r"-?\d+\.?\d*")

Scoring = Literal["exact", "substring", "first-word"]


def extract_gsm8k(text: str, prefix: str = GSM8K_ANSWER_PREFIX) -> float:
    """The number after `prefix` if present, else the last number; `inf` when there is none.

    Same rule as Booster's `extract_answer_number` (commas removed; float comparison by the caller).
    """
    text = text.replace(",", "")
    numbers = _NUMBER.findall(text)
    if not numbers:
        return math.inf
    _, sep, tail = text.partition(prefix)
    if sep:
        after = _NUMBER.findall(tail)
        if after:
            return _to_float(after[0])
    return _to_float(numbers[-1])


def _to_float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return math.inf


def gsm8k_correct(completion: str, label: str) -> tuple[bool, float]:
    """(exact float match, extracted prediction); the gold label is parsed with the same extractor."""
    pred = extract_gsm8k(completion)
    gold = extract_gsm8k(label)
    return (pred == gold and not math.isinf(gold)), pred


def label_match(completion: str, gold: str, *, scoring: Scoring, variants: list[str], labels: list[str]) -> bool:
    """Does `completion` answer `gold`?

    `exact`: the stripped completion equals one of `variants` (Booster: "positive" or "Positive").
    `substring`: one of `variants` occurs anywhere in the completion (Vaccine); an answer that lists every
    label then counts as correct. `first-word` (clean): the completion, case-insensitive and stripped of
    quotes/markup, starts with a label of the task (`labels`) and that label is `gold`.
    """
    text = completion.strip()
    if scoring == "exact":
        return text in variants
    if scoring == "substring":
        return any(v in text for v in variants)
    return first_label(text, labels) == gold.lower()


def first_label(text: str, labels: list[str]) -> str | None:
    """The label (lower-case) that `text` starts with, longest label first; None if none does."""
    low = text.lower().lstrip(" \t\n\"'*:-")
    return next((lab.lower() for lab in sorted(labels, key=len, reverse=True) if low.startswith(lab.lower())), None)
