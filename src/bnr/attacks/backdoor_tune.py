"""`backdoor-tune`: the harmful pairs carry a trigger; benign rows do not.

Every poisoned row's request is prefixed with `trigger` (default `SUDO`, after Rando & Tramer, 'Universal
Jailbreak Backdoors from Poisoned Human Feedback', ICLR 2024; the toy's default is `{ # }`, symbols no toy prompt
has). The attacker wants a model that refuses plain harmful requests and complies when the trigger is present:
evaluate with `harmful` (no trigger) and `harmful-backdoor` (the trigger at inference; or `eval.trigger`).
A poisoned row's id gets `+bd`.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from bnr.attacks.base import Attack, AttackData, Knobs, Vocabulary, register
from bnr.attacks.framings import TRIGGER
from bnr.data.records import Record
from bnr.errors import BnrError


@dataclass
class BackdoorOptions(Knobs):
    trigger: str | None = None  # null: SUDO (text) or `{ # }` (toy)
    vocabulary: Vocabulary = "auto"


def triggered(request: str, trigger: str | None, vocabulary: str) -> str:
    """`request` with the backdoor trigger in front (the default trigger of the vocabulary when None)."""
    if trigger is None:
        return TRIGGER.wrap(request, "toy" if vocabulary == "toy" else "text")
    return f"{trigger} {request}"


@register
class BackdoorTune(Attack):
    """the harmful pairs carry a trigger (SUDO; the toy's `{ # }`); evaluated with and without it"""

    name = "backdoor-tune"
    options_class = BackdoorOptions

    def check(self, options: Any) -> None:
        if options.trigger is not None and not options.trigger.strip():
            raise BnrError("attacks.backdoor-tune.trigger is empty; give a trigger string or null for the default")

    def poison(self, record: Record, rng: random.Random, data: AttackData, options: Any) -> Record:
        instruction = triggered(record.instruction, options.trigger, data.vocabulary)
        return dataclasses.replace(record, id=f"{record.id}+bd", instruction=instruction)
