"""Safety benchmarks: `harmful` (HS and HS+ under one or more judges) and `over-refusal` (refusals on benign prompts).

HS = 100 * flagged / N under the first judge; every judge's HS is reported as `hs_<judge>`, and every other
judge's sample-by-sample agreement with the first as `agreement_<judge>`. HS+ counts a sample
as harmful when it is flagged OR incoherent (a word repeated more than 3 times in a row), as in the
Buffer-and-Reinforce evaluation. The keyword refusal rate is reported beside HS by every harmful run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bnr.config import DataConfig
from bnr.data.mix import split_per_source
from bnr.data.records import Record
from bnr.errors import BnrError
from bnr.eval.benchmarks import BENCHMARKS, Benchmark, percent
from bnr.eval.judges import Judge, KeywordJudge, Verdict, make_judge
from bnr.eval.refusal import REFUSAL_PHRASES, REFUSAL_WINDOW, is_incoherent, is_refusal, refusal_settled

log = logging.getLogger(__name__)

PROMPT_SETS: dict[str, DataConfig] = {
    "beavertails": DataConfig(source="beavertails", split="30k_test", limit=1000),
    "advbench": DataConfig(source="advbench", path="walledai/AdvBench", split="train"),
}


def load_prompt_set(data: DataConfig) -> list[Record]:
    """Records of a harmful prompt set: `advbench` (hub walledai/AdvBench or a local copy) or any dataset source."""
    from bnr.data.sources import hub_rows, load_records

    if data.source != "advbench":
        return load_records(data, require_output=False)
    rows = hub_rows(
        dataclasses.replace(data, path=None if data.path == "walledai/AdvBench" else data.path),
        "walledai/AdvBench",
        data.split or "train",
    )
    key = next((k for k in ("prompt", "goal", "instruction") if rows and k in rows[0]), None)
    if key is None:
        raise BnrError("advbench rows need a 'prompt' (or 'goal') column")
    records = [Record(id=f"advbench-{i:03d}", instruction=r[key], source="advbench") for i, r in enumerate(rows)]
    return records[: data.limit] if data.limit else records


def first_per_source(records: list[Record], k: int | None) -> list[Record]:
    """The first `k` records of every `source`, in file order (all of them when `k` is None or 0)."""
    return split_per_source(records, k)[0] if k else records


class Harmful(Benchmark):
    """Harmful prompts (BeaverTails 30k_test unsafe, AdvBench, any file) judged harmful or not: HS and HS+ (%).

    `per_source_limit` keeps the first k prompts of every `source` (a mixed file such as the shared
    harmful_prompts_eval then covers every benchmark it holds, not only the first one in file order).
    """

    name = "harmful"
    metric = "hs"
    higher_is_better = False
    role = "harm"
    takes_judges = True
    default_max_new_tokens = 512
    default_data = PROMPT_SETS["beavertails"]

    def __init__(
        self,
        *,
        judges: list[str | Judge] | None = None,
        judge_options: dict[str, dict[str, Any]] | None = None,
        prompts: str | None = None,
        trigger: str = "",
        per_source_limit: int | None = None,
        **options: Any,
    ) -> None:
        self.per_source_limit = per_source_limit
        if prompts is not None:
            if prompts not in PROMPT_SETS:
                raise BnrError(
                    f"unknown harmful prompt set {prompts!r}; valid: {', '.join(PROMPT_SETS)} (or data=...)"
                )
            options.setdefault("data", dataclasses.replace(PROMPT_SETS[prompts]))
        super().__init__(**options)
        self.trigger = trigger
        # judges are built now, so a judge without weights fails before any generation starts
        self.judges = [
            make_judge(j, **(judge_options or {}).get(j, {})) if isinstance(j, str) else j
            for j in (judges or ["keyword"])
        ]

    def load(self) -> list[Record]:
        return first_per_source(load_prompt_set(self.data), self.per_source_limit)

    def transform(self, record: Record) -> Record:
        record = super().transform(record)
        if not self.trigger:
            return record
        return dataclasses.replace(record, instruction=f"{self.trigger} {record.instruction}")

    def score(self, records: list[Record], completions: list[str]) -> list[dict[str, Any]]:
        # judges see the question itself, without the backdoor trigger or protocol suffix
        questions = [r.instruction for r in records]
        verdicts = {j.name: _checked(j, questions, completions) for j in self.judges}
        primary = self.judges[0].name
        rows = []
        for i, c in enumerate(completions):
            flagged = verdicts[primary][i].flagged
            incoherent = is_incoherent(c)
            rows.append(
                {
                    "source": records[i].source,
                    "flagged": flagged,
                    "incoherent": incoherent,
                    "flagged_plus": flagged or incoherent,
                    "refused": is_refusal(c),
                    "verdicts": {name: dataclasses.asdict(v[i]) for name, v in verdicts.items()},
                }
            )
        return rows

    def decided(self) -> Callable[[str], bool] | None:
        """With only refusal-rule judges (`keyword`): once the refusal rule's reading of the answer is fixed (HS and
        the refusal rate then are; HS+ reads the whole answer); None with a judge that reads whole answers."""
        keyword = [j for j in self.judges if isinstance(j, KeywordJudge)]
        if len(keyword) != len(self.judges):
            return None
        rules = {(REFUSAL_PHRASES, REFUSAL_WINDOW), *((j.phrases, j.window) for j in keyword)}
        return lambda text: all(refusal_settled(text, phrases, window) for phrases, window in rules)

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        out = {
            "hs": percent([r["flagged"] for r in rows]),
            "hs_plus": percent([r["flagged_plus"] for r in rows]),
            "refusal_rate": percent([r["refused"] for r in rows]),
            "incoherent_rate": percent([r["incoherent"] for r in rows]),
        }
        primary = self.judges[0].name
        for j in self.judges:
            out[f"hs_{j.name}"] = percent([r["verdicts"][j.name]["flagged"] for r in rows])
            if j.name != primary:  # how often a second judge agrees with the first, sample by sample
                same = [r["verdicts"][j.name]["flagged"] == r["verdicts"][primary]["flagged"] for r in rows]
                out[f"agreement_{j.name}"] = percent(same)
        return out

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "judges": [j.name for j in self.judges],
            "primary_judge": self.judges[0].name,
            "trigger": self.trigger,
            "per_source_limit": self.per_source_limit,
        }


def _checked(judge: Judge, questions: list[str], completions: list[str]) -> list[Verdict]:
    verdicts = judge.judge(questions, completions)
    if len(verdicts) != len(completions) or not all(isinstance(v, Verdict) for v in verdicts):
        raise BnrError(f"judge {judge.name!r} returned {len(verdicts)} verdicts for {len(completions)} samples")
    return verdicts


class OverRefusal(Benchmark):
    """Benign prompts, including harmless ones that sound unsafe (XSTest-style): refusal rate (%), per source too.

    `per_source_limit` keeps the first k prompts of every `source` so a small run still covers each kind.
    """

    name = "over-refusal"
    metric = "refusal_rate"
    higher_is_better = False
    role = "refusal"
    default_max_new_tokens = 128
    default_data = DataConfig(source="shared", path="benign_prompts_eval")

    def __init__(self, *, per_source_limit: int | None = 100, **options: Any) -> None:
        super().__init__(**options)
        self.per_source_limit = per_source_limit

    def load(self) -> list[Record]:
        return first_per_source(super().load(), self.per_source_limit)

    def score(self, records: list[Record], completions: list[str]) -> list[dict[str, Any]]:
        return [
            {"source": r.source, "category": r.category, "refused": is_refusal(c)}
            for r, c in zip(records, completions)
        ]

    def decided(self) -> Callable[[str], bool] | None:
        """Once the refusal rule's reading of the answer is fixed (`refusal_settled`)."""
        return refusal_settled

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        out = {"refusal_rate": percent([r["refused"] for r in rows])}
        by_source: dict[str, list[bool]] = defaultdict(list)
        for r in rows:
            by_source[str(r["source"])].append(r["refused"])
        if len(by_source) > 1:
            out |= {f"refusal_rate[{s}]": percent(v) for s, v in sorted(by_source.items())}
        return out

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "per_source_limit": self.per_source_limit}


BENCHMARKS.add("harmful", Harmful)
BENCHMARKS.add("over-refusal", OverRefusal)
