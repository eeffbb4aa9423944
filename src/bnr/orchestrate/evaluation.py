"""An evaluation run: a run directory, a PEFT adapter folder or a model scored on benchmarks built beforehand.

Load the model, run each benchmark through the one generation loop (or the response cache), write per-sample
JSONL + aggregate JSON, finalize the run directory (`bnr eval`, `pipeline` and `sweep` all evaluate here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bnr.artifacts import is_complete, path_in_tree, read_manifest
from bnr.cards import FULL_MODEL_DIR, add_evaluation
from bnr.config import Config, EvalConfig
from bnr.errors import BnrError
from bnr.eval.backends import require_backend
from bnr.eval.benchmarks import Benchmark, run_benchmark
from bnr.eval.cache import ResponseCache
from bnr.eval.protocols import PROTOCOLS, Protocol
from bnr.eval.report import read_summary, write_result, write_summary
from bnr.eval.roles import declaration
from bnr.eval.target import resolve_target
from bnr.runs.opening import open_run

log = logging.getLogger(__name__)


def recorded_template(target: str) -> str | None:
    """The prompt template a bnr run (or the full model inside one) was trained with, from its manifest."""
    if not target:
        return None
    path = Path(target)
    run_dir = path.parent if path.name == FULL_MODEL_DIR and is_complete(path.parent) else path
    if not is_complete(run_dir):
        return None
    template = read_manifest(run_dir).get("template")
    return str(template) if template else None


def choose_template(ev: EvalConfig, protocol: Protocol) -> str:
    """`eval.template` when set; else the template the target was trained with (a run prompted in another format
    scores garbage); else the protocol's."""
    if ev.template:
        return ev.template
    trained = recorded_template(ev.target)
    if trained and trained != protocol.template:
        log.info(
            "%s was trained with template %r; evaluating with it (protocol default %r)",
            ev.target,
            trained,
            protocol.template,
        )
    return trained or protocol.template


# more empty completions than this share means the model is broken (or mis-prompted): its scores mean nothing
MAX_EMPTY_SHARE = 0.5


def check_finite_logits(model: Any, tokenizer: Any, what: str) -> None:
    """Refuse to score a model whose logits are NaN/Inf (broken weights generate nothing, which looks safe)."""
    import torch

    batch = tokenizer(["Below is an instruction. ### Response:"], return_tensors="pt").to(model.device)
    with torch.no_grad():
        logits = model(**batch).logits
    if not bool(torch.isfinite(logits).all()):
        raise BnrError(
            f"{what}: the model's logits are not finite (NaN/Inf weights); it is broken and is not scored - "
            "check the adapter (bnr merge refuses such inputs) or the base"
        )


def check_not_empty(benchmark: str, completions: list[str], what: str) -> str | None:
    """Why a benchmark result is invalid (most completions empty: an empty answer would count as safe), or None."""
    empty = sum(not c.strip() for c in completions)
    if completions and empty / len(completions) > MAX_EMPTY_SHARE:
        return (
            f"{what}: {empty} of {len(completions)} {benchmark} completions are empty, so this result is invalid and "
            "must not be read as a score; the model is broken or mis-prompted (check template= and the stop strings)"
        )
    return None


def mark_validity(result: Any, what: str) -> bool:
    """Add `valid` and `empty_share` to a benchmark result's metrics; warn loudly when it is invalid."""
    completions = [str(row["completion"]) for row in result.samples]
    reason = check_not_empty(result.benchmark, completions, what)
    result.metrics["empty_share"] = sum(not c.strip() for c in completions) / max(1, len(completions))
    result.metrics["valid"] = reason is None
    if reason:
        log.warning("INVALID: %s", reason)
        result.settings["invalid_reason"] = reason
    return reason is None


def recorded_identity(identity: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """A target's identity as the eval run `out` records it (manifest, summary, results): each local folder in it
    (the target, a merged run's full model as its base) relative to the run where in its tree, as the parents of
    every manifest are (`bnr.artifacts.path_in_tree`); a hub id or a folder elsewhere as it is."""

    def shown(value: Any) -> Any:
        return path_in_tree(value, out) if isinstance(value, str) and value and Path(value).exists() else value

    base = {k: shown(v) if k in ("name_or_path", "resolved_path") else v for k, v in identity["base_model"].items()}
    return {**identity, "path": shown(identity["path"]), "base_model": base}


def evaluate_run(cfg: Config, benchmarks: list[Benchmark]) -> Path:
    """Evaluate `cfg.eval.target` on benchmarks built beforehand (the sweep builds them, and their judges, once)."""
    ev = cfg.eval
    protocol = PROTOCOLS.get(ev.protocol)
    target = resolve_target(ev.target, cfg.model)
    template = choose_template(ev, protocol)
    backend = require_backend(ev.backend)  # before the run folder exists
    declared = {bench.name: declaration(bench) for bench in benchmarks}  # a role/orientation mismatch: before
    writer = open_run(cfg, ev.out, "eval")
    model, tokenizer = backend.load(target)
    if backend.logits:  # an engine exposes no logits; its empty-completion check below still applies
        check_finite_logits(model, tokenizer, ev.target or target.path)
    identity = recorded_identity(target.identity(), ev.out)
    model_key = target.key() + backend.cache_suffix
    cache = ResponseCache(ev.cache) if ev.cache else None
    records, valid = [], True
    for bench in benchmarks:
        result = run_benchmark(
            bench,
            model,
            tokenizer,
            template=template,
            batch_size=ev.batch_size,
            stop=list(protocol.stop),
            strip=protocol.strip,
            progress=ev.progress,
            cache=cache,
            model_key=model_key,
        )
        valid &= mark_validity(result, ev.target or target.path)
        records.append(write_result(writer.tmp, result, protocol=protocol.name, target=identity))
    write_summary(writer.tmp, records, protocol=protocol.name, target=identity, benchmarks=declared)
    metrics = {r["benchmark"]: r["metrics"] for r in records}
    out = writer.finalize(
        {"protocol": protocol.name, "template": template, "target": identity, "metrics": metrics, "seed": cfg.seed}
        | {"valid": valid, "backend": ev.backend}
    )
    if ev.target and valid:  # an invalid result never reaches a model card
        add_evaluation(ev.target, read_summary(out), out, limit=ev.limit)
    return out
