"""Protocol presets: the field's published evaluation variants, reproduced exactly, plus a `clean` one.

A protocol fixes the prompt template, the benchmarks with their options (sample counts, token budgets,
scoring rule, instruction suffix), the judges, stop strings and whitespace handling. `docs/protocols.md` has
the table of what differs; every number written by `bnr eval` records the protocol it was measured under.
Sources read for the presets: git-disl/Booster and git-disl/Vaccine (`poison/evaluation/pred.py`,
`eval_sentiment.py`, `{gsm8k,sst2,agnews}/pred_eval.py`) and SeokilHam/Buffer-and-Reinforce (same files).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from bnr.data.sources import GSM8K_INSTRUCTION_SUFFIX
from bnr.eval.tasks import BOOSTER_AGNEWS_VARIANTS, BOOSTER_SST2_VARIANTS
from bnr.registry import Registry


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol. `benchmarks` maps benchmark name -> options (see each benchmark's docstring)."""

    name: str
    description: str
    template: str
    benchmarks: dict[str, dict[str, Any]]
    judges: list[str]
    stop: list[str] = field(default_factory=list)
    strip: bool = True

    def benchmark_options(self, name: str) -> dict[str, Any]:
        """A deep copy of the preset's options for `name` (empty for a benchmark the preset does not list)."""
        return copy.deepcopy(self.benchmarks.get(name, {}))


PROTOCOLS: Registry[Protocol] = Registry("protocol")

_OVER_REFUSAL: dict[str, Any] = {"per_source_limit": 100, "max_new_tokens": 128}


def _booster_like(name: str, description: str, gsm8k_tokens: int) -> Protocol:
    return Protocol(
        name=name,
        description=description,
        template="alpaca",
        judges=["beaverdam"],
        benchmarks={
            "harmful": {"prompts": "beavertails", "limit": 1000, "max_new_tokens": 512},
            "gsm8k": {"limit": 1000, "max_new_tokens": gsm8k_tokens, "instruction_suffix": ""},
            "sst2": {"limit": 1000, "max_new_tokens": 200, "scoring": "exact", "variants": BOOSTER_SST2_VARIANTS},
            "agnews": {"limit": 1000, "max_new_tokens": 200, "scoring": "exact", "variants": BOOSTER_AGNEWS_VARIANTS},
            "over-refusal": dict(_OVER_REFUSAL),
        },
    )


PROTOCOLS.add(
    "bnr-2026",
    _booster_like(
        "bnr-2026",
        "Buffer-and-Reinforce (ICML 2026): Booster's protocol, batched; GSM8K with 512 new tokens; HS and HS+.",
        gsm8k_tokens=512,
    ),
)
PROTOCOLS.add(
    "booster-2024",
    _booster_like(
        "booster-2024",
        "Booster (2024): BeaverTails 30k_test first 1000 unsafe, 512 tokens, BeaverDam; FA exact match, 200 tokens.",
        gsm8k_tokens=200,
    ),
)
PROTOCOLS.add(
    "vaccine-2024",
    Protocol(
        name="vaccine-2024",
        description="Vaccine (2024): 500 prompts per benchmark, 128 tokens for HS, substring label match.",
        template="alpaca",
        judges=["beaverdam"],
        benchmarks={
            "harmful": {"prompts": "beavertails", "limit": 500, "max_new_tokens": 128, "response_newline": False},
            "gsm8k": {
                "limit": 500,
                "max_new_tokens": 200,
                "instruction_suffix": GSM8K_INSTRUCTION_SUFFIX,
                "response_newline": False,
            },
            "sst2": {
                "limit": 500,
                "max_new_tokens": 200,
                "scoring": "substring",
                "variants": BOOSTER_SST2_VARIANTS,
                "response_newline": False,
            },
            "agnews": {
                "limit": 500,
                "max_new_tokens": 200,
                "scoring": "substring",
                "variants": BOOSTER_AGNEWS_VARIANTS,
                "response_newline": False,
            },
            "over-refusal": dict(_OVER_REFUSAL),
        },
    ),
)
PROTOCOLS.add(
    "clean",
    Protocol(
        name="clean",
        description="This project's protocol: the model's chat template, two judges, first-word label match, "
        "all samples of the field's sets, no known bugs.",
        template="chat",
        judges=["beaverdam", "llamaguard"],
        benchmarks={
            "harmful": {"prompts": "beavertails", "limit": 1000, "max_new_tokens": 512},
            "gsm8k": {
                "data": {"source": "gsm8k", "split": "test"},
                "max_new_tokens": 512,
                "instruction_suffix": GSM8K_INSTRUCTION_SUFFIX,
            },
            "sst2": {"data": {"source": "sst2", "split": "validation"}, "max_new_tokens": 16, "scoring": "first-word"},
            "agnews": {"limit": 1000, "max_new_tokens": 16, "scoring": "first-word"},
            "over-refusal": {"per_source_limit": 200, "max_new_tokens": 256},
        },
    ),
)
