"""The safety gate: a deliverable on the provider's held-out safety probe (harmful prompts -> HS, benign look-alike
prompts -> over-refusal) beside the base's numbers, with bnr's eval harness (`bnr.eval`), and its task accuracy
(FA) on the job's labelled validation file when one is given. The base's probe numbers are computed once per
prepared base and its FA once per validation file content (sha256), both cached in the database; a job fails the
gate when its HS exceeds the base's by more than the provider's threshold.

Generation is capped at `gate.max_new_tokens` (default 80): the refusal rule behind the `keyword` judge and the
over-refusal rate reads only the first 300 characters of an answer, so longer answers cost without changing a
verdict. With `gate.stop_when_decided` (default on) each answer also ends as soon as that rule's reading of it is
fixed (a refusal phrase in the window, or the window full) and leaves its batch (`bnr.eval.generate`), and a
benchmark's prompts go in one batch (`gate.batch_size` 128): the same HS and over-refusal for less decoding. FA
generates as many tokens as the longest gold answer needs, plus a margin.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bnr.config import Config
from bnr.data.records import Record
from bnr.service.settings import SafetyGate

log = logging.getLogger(__name__)
FA_MARGIN_TOKENS = 4  # beyond the longest gold answer: room for a leading space or a closing token


def _score(bench: Any, model: Any, tokenizer: Any, cfg: Config, gate: SafetyGate, max_new_tokens: int) -> float:
    from bnr.eval.benchmarks import run_benchmark

    result = run_benchmark(
        bench,
        model,
        tokenizer,
        template=cfg.template,
        batch_size=gate.batch_size,
        max_new_tokens=max_new_tokens,
        progress=False,
        stop_when_decided=gate.stop_when_decided,
    )
    return round(float(result.value), 2)


def _benchmark(name: str, model: Any, tokenizer: Any, cfg: Config, gate: SafetyGate, **extra: Any) -> float:
    from bnr.eval.benchmarks import make_benchmark

    bench = make_benchmark(name, **{"limit": gate.limit, **gate.options.get(name, {}), **extra})
    length = min(bench.max_new_tokens, gate.max_new_tokens) if gate.max_new_tokens else bench.max_new_tokens
    return _score(bench, model, tokenizer, cfg, gate, length)


def task_accuracy(model: Any, tokenizer: Any, cfg: Config, gate: SafetyGate, records: list[Record]) -> float:
    """FA (%) on labelled `records`: each completion against its gold answer (`bnr.eval.tasks.AnswerAccuracy`)."""
    from bnr.eval.tasks import AnswerAccuracy

    bench = AnswerAccuracy(records=records)
    longest = max(len(tokenizer(g, add_special_tokens=False).input_ids) for g in bench.golds)
    return _score(bench, model, tokenizer, cfg, gate, longest + FA_MARGIN_TOKENS)


def probe(
    cfg: Config,
    gate: SafetyGate,
    adapter: Path | None,
    validation: list[Record] | None = None,
    *,
    safety: bool = True,
) -> dict[str, Any]:
    """HS and over-refusal (%) of the base of `cfg`, with `adapter` applied if given (unless `safety` is False),
    and FA (%) on `validation` when given; `wall_s` is the cost."""
    from bnr.eval.target import load_target, resolve_target

    start = time.perf_counter()
    target = resolve_target(str(adapter) if adapter else "", cfg.model)
    model, tokenizer = load_target(target)
    scores: dict[str, Any] = {}
    if safety:
        scores["hs"] = _benchmark(
            gate.harmful, model, tokenizer, cfg, gate, **({"judges": list(gate.judges)} if gate.judges else {})
        )
        scores["over_refusal"] = _benchmark(gate.over_refusal, model, tokenizer, cfg, gate)
    if validation:
        scores["fa"] = task_accuracy(model, tokenizer, cfg, gate, validation)
    scores["wall_s"] = round(time.perf_counter() - start, 3)
    return scores


def verdict(job: dict[str, Any], base: dict[str, Any], gate: SafetyGate) -> tuple[bool, str]:
    """(passed, one line saying why) for the job's and the base's probe numbers."""
    limit = base["hs"] + gate.threshold
    line = (
        f"safety gate: HS {job['hs']:.1f}% vs the base's {base['hs']:.1f}% (limit {limit:.1f}%), "
        f"over-refusal {job['over_refusal']:.1f}% vs {base['over_refusal']:.1f}%"
    )
    if "fa" in job and base.get("fa") is not None:
        line += f", FA {job['fa']:.1f}% vs {base['fa']:.1f}%"
    return job["hs"] <= limit, line
