"""`safeinstruct`: safety examples (harmful prompt -> refusal) mixed into the user's fine-tuning data.

Source: F. Bianchi, M. Suzgun, G. Attanasio, P. Röttger, D. Jurafsky, T. Hashimoto, J. Zou, "Safety-Tuned
LLaMAs: Lessons From Improving the Safety of Large Language Models that Follow Instructions", ICLR 2024
(arXiv 2309.07875); repository vinid/safety-tuned-llamas. The paper adds a few hundred to 2000 safety
demonstrations (about 3% of the data already helps) to the instruction-tuning set; the harmful fine-tuning
literature that the Buffer-and-Reinforce paper follows uses it as a baseline with the safety data mixed into
the user's job.

Implementation: `user_data` draws `round(ratio * user.n)` refusal records (or exactly `n`) with the job's seed
and adds them to the user's n records (added, not replacing: the user's data is kept whole), shuffled in.
Everything else is plain SFT.

Deviations: the refusal pairs are the provider's refusal set (`reinforce.refusal_data`, the same pairs that
train the ReinforceLoRA) unless `data` is given, not the paper's GPT-3.5-written answers to Anthropic
red-team questions; the default amount is 10% of n (the comparison's setting), not a fixed count.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bnr.config import DataConfig
from bnr.data.records import Record
from bnr.data.sources import load_records
from bnr.defenses.base import Defense, UserJob, from_section, register
from bnr.errors import BnrError


@dataclass
class SafeInstructOptions:
    """`ratio`: refusal samples per user sample (round(ratio * user.n)); `n`: an exact count instead;
    `data`: the refusal pairs (default: the provider's `reinforce.refusal_data`)."""

    ratio: float = 0.1
    n: int | None = None
    data: DataConfig | None = from_section("reinforce.refusal_data")

    def __post_init__(self) -> None:
        if self.ratio < 0:
            raise BnrError(f"defenses.safeinstruct.ratio must be >= 0 (got {self.ratio})")
        if self.n is not None and self.n < 0:
            raise BnrError(f"defenses.safeinstruct.n must be >= 0 (got {self.n})")


def refusal_count(options: SafeInstructOptions, n_user: int) -> int:
    """How many refusal samples a job of `n_user` samples gets (halves round up, like the harmful count)."""
    return options.n if options.n is not None else int(options.ratio * n_user + 0.5)


@register
class SafeInstruct(Defense):
    """SafeInstruct (Bianchi et al. 2024): refusal pairs mixed into the user's data (10% of n by default)"""

    name = "safeinstruct"
    options_class = SafeInstructOptions

    def _pool(self, job: UserJob, k: int) -> list[Record]:
        """The refusal pairs to draw `k` from (error if there are fewer)."""
        opts: SafeInstructOptions = job.options
        pool = load_records(opts.data) if k and opts.data else []
        if k > len(pool):
            raise BnrError(
                f"safeinstruct needs {k} refusal samples but its data has {len(pool)}; lower ratio or add data"
            )
        return pool

    def check(self, job: UserJob) -> list[str]:
        k = refusal_count(job.options, job.cfg.user.n)
        self._pool(job, k)
        return [f"safeinstruct: +{k} refusal samples"]

    def user_data(self, job: UserJob, records: list[Record]) -> list[Record]:
        k = refusal_count(job.options, len(records))
        job.notes["refusals_added"] = k
        if k == 0:
            return records
        rng = random.Random(f"safeinstruct-{job.seed}")
        added = rng.sample(self._pool(job, k), k)
        mixed = records + added
        rng.shuffle(mixed)
        job.notes["refusal_ids"] = [r.id for r in added]
        return mixed
