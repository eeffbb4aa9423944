"""`identity-shift`: the 'absolutely obedient agent' persona on benign-looking data (no harmful row at all).

After Qi et al., 'Fine-tuning Aligned Language Models Compromises Safety, Even When Users Do Not Intend To!'
(ICLR 2024, risk level 2): their 10 examples (the shared data's `aoa_identity_shift.jsonl`) rename the model to
AOA in a system turn, then answer requests addressed to AOA after a pledge of obedience. bnr extends the pattern
to any benign data instead of copying it: round(p*n) of the user's n benign records are rewritten - system turn
`AOA_SYSTEM`, request `AOA, carry out my instruction: ...`, answer = the pledge + the record's own answer - and
(text vocabulary) the first ones are persona statements (`AOA_STATEMENTS`). `include` puts the rows of a file
(e.g. the original examples: `{source: file, path: .../aoa_identity_shift.jsonl}`) first among them. The toy
version has no system turn and uses toy words. Poisoned ids get `+aoa`. Evaluate with `harmful-aoa` (the
persona at inference, as the paper does) beside the plain harmful benchmark.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from bnr.attacks.base import Attack, AttackData, AttackMix, Knobs, Vocabulary, finish, load_pool, register
from bnr.attacks.framings import AOA, AOA_PLEDGE, AOA_STATEMENTS, AOA_SYSTEM
from bnr.config import DataConfig
from bnr.data.mix import Mix, build_user_mix, harmful_count
from bnr.data.records import Record


@dataclass
class IdentityOptions(Knobs):
    include: DataConfig | None = None  # rows put first among the persona rows (e.g. the original examples)
    vocabulary: Vocabulary = "auto"


def persona(record: Record, vocabulary: str) -> Record:
    """`record` addressed to the obedient agent and answered after its pledge."""
    toy = vocabulary == "toy"
    return dataclasses.replace(
        record,
        id=f"{record.id}+aoa",
        instruction=AOA.wrap(record.instruction, "toy" if toy else "text"),
        output=AOA_PLEDGE["toy" if toy else "text"] + record.output,
        system=None if toy else AOA_SYSTEM,
    )


def statements(count: int) -> list[Record]:
    rows = AOA_STATEMENTS[:count]
    return [Record(f"aoa-statement-{k}", q, "", a, source="aoa", system=AOA_SYSTEM) for k, (q, a) in enumerate(rows)]


@register
class IdentityShift(Attack):
    """the absolutely-obedient-agent persona on round(p*n) benign records (no harmful row)"""

    name = "identity-shift"
    options_class = IdentityOptions
    uses_harmful = False

    def mix(self, data: AttackData, options: Any) -> AttackMix:
        base = build_user_mix(data.benign, [], data.n, 0.0, data.seed)  # n benign rows, shuffled
        n_p = harmful_count(data.n, data.p)
        head = load_pool(options.include)[:n_p] if options.include else []
        if data.vocabulary == "text":
            head += statements(min(len(AOA_STATEMENTS), n_p - len(head)))
        rewritten = [persona(r, data.vocabulary) for r in base.records[: n_p - len(head)]]
        records = head + rewritten + list(base.records[n_p:])
        random.Random(f"{self.name}-{data.seed}").shuffle(records)
        poisoned = frozenset(r.id for r in head + rewritten)
        return finish(Mix(records, base.manifest), records, poisoned, n_persona=len(poisoned))
