"""Build a user's fine-tuning set: n samples with harmful ratio p, exact counts, seeded."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from bnr.data.records import Record
from bnr.errors import BnrError


def harmful_count(n: int, p: float) -> int:
    """round(p * n) with halves rounded up (no banker's rounding, no off-by-one)."""
    return math.floor(p * n + 0.5)


@dataclass(frozen=True)
class Mix:
    records: list[Record]
    manifest: dict[str, Any]


def sample(records: list[Record], k: int, rng: random.Random, what: str) -> list[Record]:
    if k > len(records):
        raise BnrError(f"asked for {k} {what} samples but the dataset has only {len(records)}; lower n or add data")
    return rng.sample(records, k)


def split_per_source(records: list[Record], k: int) -> tuple[list[Record], list[Record]]:
    """(the first `k` records of every `source`, the rest), each in file order."""
    seen: dict[str, int] = {}
    first: list[Record] = []
    rest: list[Record] = []
    for r in records:
        seen[r.source] = seen.get(r.source, 0) + 1
        (first if seen[r.source] <= k else rest).append(r)
    return first, rest


def data_manifest(records: list[Record], **extra: Any) -> dict[str, Any]:
    """What a run records about its data: counts, the chosen ids and content hashes."""
    return {**extra, "count": len(records), "ids": [r.id for r in records], "digests": [r.digest() for r in records]}


def build_user_mix(benign: list[Record], harmful: list[Record], n: int, p: float, seed: int) -> Mix:
    """n samples, round(p*n) harmful and the rest benign, drawn without replacement and shuffled."""
    if not 0.0 <= p <= 1.0:
        raise BnrError(f"harmful ratio p must be in [0, 1] (got {p})")
    if n < 1:
        raise BnrError(f"n must be >= 1 (got {n})")
    n_h = harmful_count(n, p)
    rng = random.Random(seed)
    chosen_h = sample(harmful, n_h, rng, "harmful") if n_h else []
    chosen_b = sample(benign, n - n_h, rng, "benign") if n - n_h else []
    mixed = chosen_h + chosen_b
    rng.shuffle(mixed)
    manifest = data_manifest(
        mixed, n=n, p=p, seed=seed, n_harmful=n_h, n_benign=n - n_h, harmful_ids=sorted(r.id for r in chosen_h)
    )
    return Mix(mixed, manifest)
