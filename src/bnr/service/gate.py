"""The safety gate: a deliverable on the provider's held-out safety probe (harmful prompts -> HS, benign look-alike
prompts -> over-refusal) beside the base's numbers, with bnr's eval harness (`bnr.eval`). The base is evaluated
once per prepared base and cached in the database; a job fails the gate when its HS exceeds the base's by more
than the provider's threshold."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bnr.config import Config
from bnr.service.settings import SafetyGate

log = logging.getLogger(__name__)


def probe(cfg: Config, gate: SafetyGate, adapter: Path | None) -> dict[str, Any]:
    """HS and over-refusal (%) of the base of `cfg`, with `adapter` applied if given; `wall_s` is the cost."""
    from bnr.eval.benchmarks import run_benchmark
    from bnr.eval.target import load_target, resolve_target

    start = time.perf_counter()
    target = resolve_target(str(adapter) if adapter else "", cfg.model)
    model, tokenizer = load_target(target)
    options: dict[str, Any] = {"limit": gate.limit}
    scores: dict[str, Any] = {}
    for key, name in (("hs", gate.harmful), ("over_refusal", gate.over_refusal)):
        opts = {**options, **({"judges": list(gate.judges)} if gate.judges and key == "hs" else {})}
        result = run_benchmark(
            name, model, tokenizer, template=cfg.template, options=opts, batch_size=gate.batch_size, progress=False
        )
        scores[key] = round(float(result.value), 2)
    scores["wall_s"] = round(time.perf_counter() - start, 3)
    return scores


def verdict(job: dict[str, Any], base: dict[str, Any], gate: SafetyGate) -> tuple[bool, str]:
    """(passed, one line saying why) for the job's and the base's probe numbers."""
    limit = base["hs"] + gate.threshold
    line = (
        f"safety gate: HS {job['hs']:.1f}% vs the base's {base['hs']:.1f}% (limit {limit:.1f}%), "
        f"over-refusal {job['over_refusal']:.1f}% vs {base['over_refusal']:.1f}%"
    )
    return job["hs"] <= limit, line
