"""Fine-tune accuracy (FA) benchmarks: gsm8k, sst2, agnews, scored the way the field's scripts score them."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from bnr.config import DataConfig
from bnr.data.records import Record
from bnr.data.sources import AGNEWS_LABELS, SST2_LABELS
from bnr.errors import BnrError
from bnr.eval.benchmarks import BENCHMARKS, Benchmark, percent
from bnr.eval.scoring import Scoring, gsm8k_correct, label_match

SCORINGS = ("exact", "substring", "first-word")


class Gsm8k(Benchmark):
    """GSM8K test: number after "The final answer is: " else the last number; exact float match (accuracy %)."""

    name = "gsm8k"
    metric = "accuracy"
    default_max_new_tokens = 200
    default_data = DataConfig(source="gsm8k", split="test", limit=1000)

    def transform(self, record: Record) -> Record:
        # the hub loader appends the training suffix; the protocol decides the suffix, so strip it first
        from dataclasses import replace

        from bnr.data.sources import GSM8K_INSTRUCTION_SUFFIX

        instr = record.instruction.removesuffix(GSM8K_INSTRUCTION_SUFFIX)
        return replace(record, instruction=instr + self.instruction_suffix)

    def score(self, records: list[Record], completions: list[str]) -> list[dict[str, Any]]:
        rows = []
        for r, c in zip(records, completions):
            gold = r.label if r.label is not None else r.output
            if not gold:
                raise BnrError(f"gsm8k record {r.id!r} has no label or output to score against")
            ok, pred = gsm8k_correct(c, gold)
            rows.append({"label": gold, "extracted": None if math.isinf(pred) else pred, "correct": ok})
        return rows

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        return {"accuracy": percent([r["correct"] for r in rows])}


class _Classification(Benchmark):
    labels: ClassVar[tuple[str, ...]] = ()
    default_max_new_tokens = 200

    def __init__(
        self, *, scoring: Scoring = "exact", variants: dict[str, list[str]] | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        if scoring not in SCORINGS:
            raise BnrError(f"{self.name}: unknown scoring {scoring!r}; valid: {', '.join(SCORINGS)}")
        self.scoring: Scoring = scoring
        self.variants = variants or {lab: [lab, lab.lower(), lab.capitalize()] for lab in self.labels}

    def score(self, records: list[Record], completions: list[str]) -> list[dict[str, Any]]:
        rows = []
        for r, c in zip(records, completions):
            gold = r.label or r.output
            if gold not in self.variants:
                raise BnrError(
                    f"{self.name} record {r.id!r} has label {gold!r}; expected one of {list(self.variants)}"
                )
            ok = label_match(c, gold, scoring=self.scoring, variants=self.variants[gold], labels=list(self.labels))
            rows.append({"label": gold, "correct": ok})
        return rows

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        return {"accuracy": percent([r["correct"] for r in rows])}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "scoring": self.scoring, "variants": self.variants}


class Sst2(_Classification):
    """SST-2 validation (872): label word positive/negative; scoring exact | substring | first-word (accuracy %)."""

    name = "sst2"
    metric = "accuracy"
    labels = SST2_LABELS
    default_data = DataConfig(source="sst2", split="validation", limit=1000)


class AgNews(_Classification):
    """AG News test (first 1000): World/Sports/Business/Sci/Tech; scoring exact | substring | first-word."""

    name = "agnews"
    metric = "accuracy"
    labels = AGNEWS_LABELS
    default_data = DataConfig(source="agnews", split="test", limit=1000)


# Booster's scripts accept these strings (exact match after strip); "sci" for Sci/Tech is theirs, not a typo here
BOOSTER_SST2_VARIANTS = {"positive": ["positive", "Positive"], "negative": ["negative", "Negative"]}
BOOSTER_AGNEWS_VARIANTS = {
    "World": ["World", "world"],
    "Sports": ["Sports", "sports"],
    "Business": ["Business", "business"],
    "Sci/Tech": ["Sci/Tech", "sci"],
}

BENCHMARKS.add("gsm8k", Gsm8k)
BENCHMARKS.add("sst2", Sst2)
BENCHMARKS.add("agnews", AgNews)


def answer_of(record: Record) -> str:
    """The gold answer of a labelled record: its `label`, else its answer (the assistant's turn, the completion)."""
    return record.label if record.label is not None else record.output


class AnswerAccuracy(Benchmark):
    """FA (%) on labelled records the caller holds (a fine-tuning job's validation file): the gold of a record is
    `answer_of(record)`. `first-word` (default) counts a completion that starts with its gold (case-insensitive;
    among the records' golds the longest match wins), `exact` one that equals it, `substring` one that holds it.
    Not registered by name: it is built with the records (`AnswerAccuracy(records=...)`)."""

    name = "answer-accuracy"
    metric = "accuracy"
    default_max_new_tokens = 32

    def __init__(self, *, records: list[Record], scoring: Scoring = "first-word", **options: Any) -> None:
        super().__init__(**options)
        if scoring not in SCORINGS:
            raise BnrError(f"{self.name}: unknown scoring {scoring!r}; valid: {', '.join(SCORINGS)}")
        missing = next((r for r in records if not answer_of(r)), None)
        if missing is not None:
            raise BnrError(f"{missing.origin or missing.id}: has no label or answer to score against")
        self.records, self.scoring = list(records), scoring
        self.golds = sorted({answer_of(r) for r in records})

    def load(self) -> list[Record]:
        return self.records[: self.data.limit] if self.data.limit else list(self.records)

    def score(self, records: list[Record], completions: list[str]) -> list[dict[str, Any]]:
        rows = []
        for r, c in zip(records, completions):
            gold = answer_of(r)
            ok = label_match(c, gold, scoring=self.scoring, variants=[gold], labels=self.golds)
            rows.append({"label": gold, "correct": ok})
        return rows

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        return {"accuracy": percent([r["correct"] for r in rows])}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "scoring": self.scoring, "records": len(self.records)}
