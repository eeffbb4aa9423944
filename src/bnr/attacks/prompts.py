"""Inference-time attacks as harmful benchmarks: the held-out harmful prompts wrapped in a named framing.

`harmful-<name>` for every framing in `bnr.attacks.framings.INFERENCE` (the jailbreak templates, `backdoor`
and `aoa`): the `harmful` benchmark (same prompt set, same judges, HS / HS+ / refusal rate) whose prompts carry
the framing; the judges see the plain question. The toy world registers `toy-harmful-<name>` the same way
(`bnr.toy.attacks`). A model attacked with `jailbreak-tune`, `backdoor-tune` or `identity-shift` is measured
with and without the key its attacker planted; the fixed templates are also the classic prompt-only attacks
on any deliverable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bnr.attacks.framings import AOA, AOA_SYSTEM, INFERENCE, Voc
from bnr.data.records import Record
from bnr.errors import BnrError
from bnr.eval.benchmarks import BENCHMARKS, Benchmark, builds
from bnr.eval.safety import Harmful


class FramedHarmful(Harmful):
    """`harmful` with every prompt wrapped in one framing (`framing`, in `vocabulary`)."""

    def __init__(self, *, framing: str, vocabulary: Voc = "text", **options: Any) -> None:
        if framing not in INFERENCE:
            raise BnrError(f"unknown prompt framing {framing!r}; valid: {', '.join(INFERENCE)}")
        super().__init__(**options)
        self.framing = INFERENCE[framing]
        self.vocabulary: Voc = vocabulary

    def transform(self, record: Record) -> Record:
        record = super().transform(record)
        wrapped = dataclasses.replace(record, instruction=self.framing.wrap(record.instruction, self.vocabulary))
        if self.framing is AOA and self.vocabulary == "text":
            wrapped = dataclasses.replace(wrapped, system=AOA_SYSTEM)
        return wrapped

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "framing": self.framing.name, "framing_source": self.framing.source}


def framed_benchmark(name: str, framing: str, vocabulary: Voc, defaults: dict[str, Any]) -> None:
    """Register benchmark `name`: `FramedHarmful` with `framing`, its result named `name`."""
    cls = type(f"FramedHarmful_{framing.replace('-', '_')}", (FramedHarmful,), {"name": name})

    def factory(**options: Any) -> Benchmark:
        for key, value in defaults.items():
            options.setdefault(key, value)
        bench: Benchmark = cls(framing=framing, vocabulary=vocabulary, **options)
        return bench

    source = INFERENCE[framing].source
    BENCHMARKS.add(name, builds(cls)(factory), f"HS (%) on the harmful prompts in the {framing!r} framing ({source})")


for _name in INFERENCE:
    framed_benchmark(f"harmful-{_name}", _name, "text", {})
