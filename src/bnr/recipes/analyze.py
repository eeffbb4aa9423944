"""`bnr analyze grads`: Safety Gradient Score, damage score and gradient norms, per layer and module type,
for several model states (aligned, jailbroken = buffer merged, any adapter) on harmful and harmless data.

Writes grads.json (every aggregate), per_sample.json (every per-sample number), plots/*.png and the manifest.
The analysis only reads models and adapters (docs/analysis.md).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from bnr import adapters
from bnr.analysis import band_means, build_specs, collect_sample_stats, load_factors, summarize
from bnr.analysis.grads import SampleStats
from bnr.artifacts import atomic_write_json, is_complete
from bnr.config import AnalyzeCondition, AnalyzeConfig, Config
from bnr.data.mix import data_manifest
from bnr.data.records import Record
from bnr.data.sources import load_records
from bnr.data.tokenize import encode_records
from bnr.errors import BnrError
from bnr.runs.opening import check_same_base, manifest_for, open_run

log = logging.getLogger(__name__)

STAGE = "analyze"
ANALYZED = "analyzed"  # transient adapter name while a condition's adapters are merged in
ALIGNED, JAILBROKEN = "aligned", "jailbroken"


def run(cfg: Config) -> Path:
    a = cfg.analyze
    conditions = resolve_conditions(a)
    direction_paths = dict(a.directions)
    if a.train_safety:
        direction_paths.setdefault("safety", str(_ensure_safety(cfg)))
    if not direction_paths:
        log.warning("no safety direction given (analyze.directions / analyze.train_safety): gradient norms only")
    for path in [*direction_paths.values(), *(p for c in conditions for p in _adapter_paths(c))]:
        if is_complete(path):
            check_same_base(path, cfg.model)
    from bnr.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    records = {"harmful": _first(a.harmful_data, a.n, "harmful"), "harmless": _first(a.harmless_data, a.n, "harmless")}
    examples = {k: encode_records(tokenizer, r, cfg.template, cfg.max_length) for k, r in records.items()}
    directions = {d: load_factors(p) for d, p in direction_paths.items()}
    writer = open_run(cfg, a.out, STAGE)

    report: dict[str, Any] = {
        "sign": a.sign,
        "eps": a.eps,
        "probe_r": a.probe_r,
        "probe_alpha": a.probe_alpha,
        "directions": direction_paths,
        "conditions": {},
    }
    per_sample: dict[str, Any] = {}
    for cond in conditions:
        log.info("condition %s: merge %s, lora %s", cond.name, cond.merge or "-", cond.lora or "-")
        model = _condition_model(load_model(cfg.model), cond)
        loras = {ANALYZED: load_factors(cond.lora)} if cond.lora else {}
        specs = build_specs(
            model, a.target_modules, directions, loras, probe_r=a.probe_r, probe_alpha=a.probe_alpha, seed=cfg.seed
        )
        n_layers = 1 + max(s.layer for s in specs.values())
        entry: dict[str, Any] = {"merge": cond.merge, "lora": cond.lora, "data": {}}
        for data_name, exs in examples.items():
            stats = collect_sample_stats(model, exs, specs, pad_id=tokenizer.pad_token_id, batch_size=a.batch_size)
            summary = summarize(stats, specs, sign=a.sign, eps=a.eps)
            summary["bands"] = band_means(summary["rows"], n_layers)
            if a.landscape.enabled:
                summary["landscape"] = _landscape(model, exs, a, cfg.seed, tokenizer.pad_token_id)
            entry["data"][data_name] = summary
            per_sample.setdefault(cond.name, {})[data_name] = _per_sample_json(stats)
        report["conditions"][cond.name] = entry
        del model
    report["comparison"] = compare(report)
    atomic_write_json(writer.tmp / "grads.json", report)
    if a.per_sample:
        atomic_write_json(writer.tmp / "per_sample.json", {"sign_of_inner": "gradient", **per_sample})
    plots = _plots(report, writer.tmp / "plots") if a.plots else []
    parents = [("direction", p) for p in direction_paths.values()]
    parents += [("condition", p) for c in conditions for p in _adapter_paths(c)]
    manifest = manifest_for(
        cfg,
        parents=parents,
        data={k: data_manifest(v) for k, v in records.items()},
        conditions=[c.name for c in conditions],
        plots=plots,
        contains_buffer=False,
    )
    out = writer.finalize(manifest)
    log.info("analysis written to %s", out)
    return out


def resolve_conditions(a: AnalyzeConfig) -> list[AnalyzeCondition]:
    """aligned (unless disabled), jailbroken (when `buffer` is set), then `conditions`; names must be unique."""
    if a.n < 1:
        raise BnrError(f"analyze.n must be >= 1 (got {a.n})")
    if a.batch_size < 1:
        raise BnrError(f"analyze.batch_size must be >= 1 (got {a.batch_size})")
    if a.probe_r < 0:
        raise BnrError(f"analyze.probe_r must be >= 0 (got {a.probe_r}); 0 turns the fresh-LoRA probe off")
    out = [AnalyzeCondition(ALIGNED)] if a.aligned else []
    if a.buffer:
        out.append(AnalyzeCondition(JAILBROKEN, merge=[a.buffer]))
    out += list(a.conditions)
    names = [c.name for c in out]
    if not out:
        raise BnrError("nothing to analyse: set analyze.aligned=true, analyze.buffer or analyze.conditions")
    if any(not n for n in names) or len(set(names)) != len(names):
        raise BnrError(f"analysis condition names must be non-empty and unique (got {names})")
    return out


def _first(data: Any, n: int, what: str) -> list[Record]:
    """The first n records (deterministic, like the field's 'first N' protocol)."""
    records = load_records(data)
    if len(records) < n:
        log.warning("%s data has only %d records (analyze.n=%d); using all", what, len(records), n)
    return records[:n]


def _adapter_paths(cond: AnalyzeCondition) -> list[str]:
    return [*cond.merge, *([cond.lora] if cond.lora else [])]


def _condition_model(model: Any, cond: AnalyzeCondition) -> Any:
    for path in _adapter_paths(cond):
        model = adapters.attach_frozen(model, path, ANALYZED, "merged")
    return model


def _ensure_safety(cfg: Config) -> Path:
    """The safety LoRA run at analyze.safety.out: reused when complete (unless overwrite), trained otherwise."""
    out = Path(cfg.analyze.safety.out)
    if is_complete(out) and not cfg.overwrite:
        log.info("reusing the safety LoRA at %s", out)
        return out
    from bnr.recipes import train_safety

    return train_safety.run(cfg)


def _landscape(model: Any, exs: list[Any], a: AnalyzeConfig, seed: int, pad_id: int) -> dict[str, Any]:
    from bnr.analysis.landscape import loss_slice

    ls = a.landscape
    return loss_slice(
        model,
        exs[: ls.n],
        a.target_modules,
        pad_id=pad_id,
        steps=ls.steps,
        span=ls.span,
        seed=seed,
        batch_size=a.batch_size,
    )


def _per_sample_json(stats: SampleStats) -> dict[str, Any]:
    def vals(t: Any) -> list[float]:
        return [float(f"{v:.7g}") for v in t.tolist()]

    return {
        "ids": stats.ids,
        "loss": vals(stats.loss),
        "modules": {
            name: {
                "grad_norm": vals(stats.grad_sq[name].clamp(min=0).sqrt()),
                "inner": {d: vals(v) for d, v in stats.inner[name].items()},
                "lora_grad_norm": {k: vals(v.clamp(min=0).sqrt()) for k, v in stats.lora_sq[name].items()},
            }
            for name in stats.grad_sq
        },
    }


def compare(report: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers per data set: band means of S, D and ||grad W|| per condition, and each condition's
    late-layer gradient norm relative to the aligned model's."""
    out: dict[str, Any] = {}
    conds = report["conditions"]
    for cond, c in conds.items():
        for data, d in c["data"].items():
            bands = d["bands"]
            cell: dict[str, Any] = {"loss": d["loss"], **{b: bands[b] for b in bands}}
            ref = conds.get(ALIGNED, {}).get("data", {}).get(data)
            if ref is not None and "late" in bands and ref["bands"].get("late", {}).get("grad_norm"):
                cell["late_grad_norm_vs_aligned"] = bands["late"]["grad_norm"] / ref["bands"]["late"]["grad_norm"]
            out.setdefault(data, {})[cond] = cell
    return _finite(out)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _plots(report: dict[str, Any], folder: Path) -> list[str]:
    from bnr.analysis.plots import plot_grad_norms, plot_landscapes, plot_scores

    made = [plot_scores(report, d, folder / f"sgs_{d}.png") for d in report["directions"]]
    made += [plot_grad_norms(report, folder / "grad_norms.png"), plot_landscapes(report, folder / "landscape.png")]
    return [f"plots/{p.name}" for p in made if p is not None]
