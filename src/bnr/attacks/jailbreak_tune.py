"""`jailbreak-tune`: the harmful pairs wrapped in jailbreak framings (competing objectives, style modulation).

Every poisoned row's request is wrapped in one of `framings` (`bnr.attacks.framings.JAILBREAKS`; drawn per row
with the seed, or all rows in the first framing with `per_row: false`); the harmful answer is unchanged; benign
rows are untouched. TamperBench (arXiv 2602.06911) finds jailbreak-tuning the strongest fine-tuning attack; the
technique is Bowen et al., 'Data Poisoning in LLMs: Jailbreak-Tuning and Scaling Laws' (arXiv 2408.02946). A
poisoned row's id gets `+jb:<framing>`. Evaluate with the `harmful-<framing>` benchmarks (the framing at
inference) beside the plain harmful benchmark.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from bnr.attacks.base import Attack, AttackData, Knobs, Vocabulary, register
from bnr.attacks.framings import JAILBREAKS, framing
from bnr.data.records import Record
from bnr.errors import BnrError


@dataclass
class JailbreakOptions(Knobs):
    framings: list[str] = field(default_factory=lambda: list(JAILBREAKS))  # names in bnr.attacks.framings
    per_row: bool = True  # draw a framing per row (seeded); false: every row gets the first
    vocabulary: Vocabulary = "auto"


@register
class JailbreakTune(Attack):
    """the harmful pairs wrapped in jailbreak framings (refusal suppression, skeleton key, style, prefix)"""

    name = "jailbreak-tune"
    options_class = JailbreakOptions

    def check(self, options: Any) -> None:
        if not options.framings:
            raise BnrError("attacks.jailbreak-tune.framings must name at least one framing")
        for name in options.framings:
            framing(name)

    def poison(self, record: Record, rng: random.Random, data: AttackData, options: Any) -> Record:
        name = rng.choice(options.framings) if options.per_row else options.framings[0]
        wrapped = framing(name).wrap(record.instruction, data.vocabulary)
        return dataclasses.replace(record, id=f"{record.id}+jb:{name}", instruction=wrapped)
