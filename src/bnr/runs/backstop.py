"""The behavioural backstop of merge (issue 21, section 1): where evaluating is affordable, the merged candidate
is generated on a small harmful probe beside the plain base, and refused when its HS exceeds the base's by more
than `guard.behavioural_margin` points. The static guard (`bnr.guard`) keys on the buffer's subspaces; this catches
a candidate that behaves like the buffer whatever its tensors look like.

It reuses bnr's eval harness (`bnr.eval`: one generation loop, the benchmark's judge): the probe is a benchmark
named by `guard.behavioural_probe`, or the first `guard.behavioural_n` prompts of the buffer's own harmful
training data (`buffer.data`) with the `keyword` judge, or on the toy world with its exact `toy-harm` judge (as
the toy presets' `toy-harmful`). The base's numbers are cached per (base content hash, probe) in
$BNR_CACHE/backstop, so they are computed once per base, not per merge.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json, hash_json
from bnr.config import Config, GuardConfig, ModelConfig
from bnr.errors import BnrError
from bnr.filehash import bnr_cache

log = logging.getLogger(__name__)
DEFAULT_MAX_NEW_TOKENS = 64  # short answers: a refusal or a compliance shows in the first tokens


def parameter_count(model: ModelConfig) -> int | None:
    """Parameters of a local safetensors base, read from the file headers (no weights loaded); None if unknown."""
    from safetensors import safe_open

    from bnr.models import resolve

    folder = Path(resolve(model).name_or_path).expanduser()
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    total = 0
    for f in files:
        with safe_open(str(f), "pt") as h:
            total += sum(math.prod(h.get_slice(k).get_shape()) for k in h.keys())  # noqa: SIM118 (safe_open is not iterable)
    return total


def wanted(policy: GuardConfig, model: ModelConfig) -> tuple[bool, str]:
    """(run the backstop?, why) under `guard.behavioural`."""
    if policy.behavioural != "auto":
        return bool(policy.behavioural), f"guard.behavioural={'on' if policy.behavioural else 'off'}"
    n = parameter_count(model) if model.name_or_path else None
    if n is None:
        return False, "guard.behavioural=auto: the base's parameter count is unknown (not a local safetensors folder)"
    if n >= policy.behavioural_max_params:
        return False, f"guard.behavioural=auto: the base has {n:,} parameters (>= guard.behavioural_max_params)"
    return True, f"guard.behavioural=auto: the base has {n:,} parameters"


def probe_spec(cfg: Config) -> tuple[str, dict[str, Any]] | None:
    """(benchmark name, options) of the probe, or None when there is none (no knob, no `buffer.data`)."""
    g = cfg.guard
    options: dict[str, Any] = {"limit": g.behavioural_n}
    if g.behavioural_max_new_tokens:
        options["max_new_tokens"] = g.behavioural_max_new_tokens
    if g.behavioural_probe:
        return g.behavioural_probe, options
    data = cfg.buffer.data
    if not data.path:
        return None
    options["data"] = dataclasses.replace(data)
    if data.source == "toy":  # the toy world's exact judge and answer length, as its presets' toy-harmful
        return "toy-harmful", options
    options.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    return "harmful", options


def _probe(cfg: Config, base: ModelConfig, adapter: Path | None, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """HS (%) of the base, with `adapter` applied if given, on the probe; `wall_s` is what it cost."""
    from bnr.eval.benchmarks import run_benchmark
    from bnr.eval.target import Target, load_target

    start = time.perf_counter()
    adapter_dir = str(adapter) if adapter else None
    model, tokenizer = load_target(Target("adapter" if adapter else "model", adapter_dir or "", base, adapter_dir))
    result = run_benchmark(
        name, model, tokenizer, template=cfg.template, options=dict(options), batch_size=cfg.eval.batch_size,
        progress=False,
    )  # fmt: skip
    return {"hs": round(float(result.value), 2), "n": result.n, "wall_s": round(time.perf_counter() - start, 3)}


def _cache_file(base: ModelConfig, name: str, options: dict[str, Any], template: str) -> Path:
    from bnr.models import model_identity

    ident = model_identity(base)
    ident.pop("name_or_path", None), ident.pop("resolved_path", None)  # by content, not by the path's spelling
    opts = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in options.items()}  # type: ignore[arg-type]
    key = hash_json({"base": ident, "probe": name, "options": opts, "template": template})
    return bnr_cache() / "backstop" / f"{key}.json"


def base_numbers(cfg: Config, base: ModelConfig, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The plain base's probe numbers, from the cache or computed once and cached (`cached` says which)."""
    path = _cache_file(base, name, options, cfg.template)
    try:
        return {**json.loads(path.read_text()), "cached": True}
    except (OSError, ValueError):
        pass
    numbers = _probe(cfg, base, None, name, options)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, numbers)
    return {**numbers, "cached": False}


def check(cfg: Config, base: str, candidate: Path) -> dict[str, Any]:
    """Run the backstop on the merged adapter in `candidate` (the run's partial folder) over the plain `base`:
    the record for the manifest, or a one-line refusal (BnrError) when its HS exceeds the base's by more than
    `guard.behavioural_margin`."""
    g = cfg.guard
    model = dataclasses.replace(cfg.model, name_or_path=base)
    run, why = wanted(g, model)
    if not run:
        return {"ran": False, "why": why}
    spec = probe_spec(cfg)
    if spec is None or not base:
        if g.behavioural is True:
            raise BnrError(
                "guard.behavioural=on needs a base (model.name_or_path) and a probe: set buffer.data (the buffer's "
                "harmful training data) or guard.behavioural_probe=<benchmark>"
            )
        return {"ran": False, "why": f"{why}, but no probe (buffer.data and guard.behavioural_probe unset)"}
    name, options = spec
    ref = base_numbers(cfg, model, name, options)
    got = _probe(cfg, model, candidate, name, options)
    record = {"ran": True, "why": why, "probe": name, "n": got["n"], "hs": got["hs"], "base_hs": ref["hs"],
              "margin": g.behavioural_margin, "wall_s": got["wall_s"], "base_wall_s": ref["wall_s"],
              "base_cached": ref["cached"]}  # fmt: skip
    log.info("behavioural backstop: HS %.1f%% vs the base's %.1f%% on %s (n=%d)", got["hs"], ref["hs"], name, got["n"])
    if got["hs"] > ref["hs"] + g.behavioural_margin:
        raise BnrError(
            f"merge refused by the behavioural backstop: the merged adapter's HS is {got['hs']:.1f}% against the "
            f"base's {ref['hs']:.1f}% on {name} (n={got['n']}), more than guard.behavioural_margin="
            f"{g.behavioural_margin:g} points above; it behaves like the buffer, check its inputs"
        )
    return record
