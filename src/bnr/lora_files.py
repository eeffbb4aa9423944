"""LoRA adapter folders on disk: read per-module factors (`read_lora`) and write them back (`write_lora`).

A folder is the standard PEFT layout, `adapter_config.json` plus `adapter_model.safetensors` (or the older
`adapter_model.bin`), with weights `base_model.model.<module>.lora_{A,B}.weight`. Only plain LoRA deltas
s * B @ A on Linear weights are accepted; every variant this package cannot merge exactly is refused with a
one-line `BnrError`, and so are BufferLoRA artifacts. `write_lora` folds each module's scaling into B and
writes a folder that plain `PeftModel.from_pretrained` loads with scaling 1 everywhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bnr.artifacts import ADAPTER_CONFIG, assert_no_buffer, atomic_write_json, temp_file_beside, umask_mode
from bnr.diskfull import writing
from bnr.errors import BnrError

SAFETENSORS_WEIGHTS = "adapter_model.safetensors"
BIN_WEIGHTS = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."

# adapter_config.json options whose adapters are not plain LoRA deltas s * B @ A on Linear weights.
_UNSUPPORTED_OPTIONS: dict[str, str] = {
    "use_dora": "DoRA",
    "use_qalora": "QA-LoRA",
    "lora_bias": "lora_bias",
    "fan_in_fan_out": "fan_in_fan_out (Conv1D layers)",
    "modules_to_save": "modules_to_save (fully trained extra modules)",
    "trainable_token_indices": "trainable_token_indices",
    "target_parameters": "target_parameters",
    "layer_replication": "layer_replication",
    "alora_invocation_tokens": "aLoRA",
    "megatron_config": "Megatron layers",
    "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA",
    "kasa_config": "KaSA",
    "arrow_config": "Arrow routing",
    "use_bdlora": "BD-LoRA",
}
_KEY_RE = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


@dataclass(frozen=True)
class LoraModule:
    """One adapted Linear module: delta W = scaling * B @ A, with A: r x d_in and B: d_out x r."""

    A: Tensor
    B: Tensor
    scaling: float

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


@dataclass
class LoraFactors:
    """The LoRA factors of one adapter folder, keyed by module name relative to the causal LM."""

    path: Path
    base_model_name_or_path: str | None
    task_type: str | None
    modules: dict[str, LoraModule]
    weights_file: Path


# ---------------------------------------------------------------- reading


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise BnrError(f"adapter folder {str(path)!r} does not exist; point to a finished run or PEFT adapter folder")
    cfg_path = path / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise BnrError(f"{str(path)!r} has no {ADAPTER_CONFIG}; point to a PEFT LoRA adapter folder")
    try:
        cfg: Any = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BnrError(f"{str(cfg_path)!r} is not valid JSON ({e}); re-save the adapter") from None
    if not isinstance(cfg, dict):
        raise BnrError(f"{str(cfg_path)!r} is not a JSON object (got {type(cfg).__name__}); re-save the adapter")
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        raise BnrError(f"{str(path)!r} is not a LoRA adapter (peft_type={cfg.get('peft_type')!r}); use a LoRA adapter")
    for key, what in _UNSUPPORTED_OPTIONS.items():
        if cfg.get(key):
            raise BnrError(f"{str(path)!r} uses {what} ({key}), which the merge does not support; retrain plain LoRA")
    _check_rank_and_alpha(cfg_path, cfg)
    return cfg


def _check_rank_and_alpha(cfg_path: Path, cfg: dict[str, Any]) -> None:
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        got = "no 'r'" if r is None else f"r={r!r}"
        raise BnrError(f"{str(cfg_path)!r} has {got}; a LoRA adapter_config.json needs an integer rank r >= 1")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
        got = "no 'lora_alpha'" if alpha is None else f"lora_alpha={alpha!r}"
        raise BnrError(f"{str(cfg_path)!r} has {got}; a LoRA adapter_config.json needs a finite number lora_alpha")
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = cfg.get(key) or {}
        ok = isinstance(pattern, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in pattern.values()
        )
        if not ok:
            raise BnrError(f"{str(cfg_path)!r}: {key} must map module names to numbers > 0 (got {pattern!r})")


def _load_weights(path: Path) -> tuple[dict[str, Tensor], Path]:
    st, binf = path / SAFETENSORS_WEIGHTS, path / BIN_WEIGHTS
    if st.is_file():
        from safetensors.torch import load_file

        weights_file, load = st, lambda: load_file(str(st), device="cpu")
    elif binf.is_file():
        weights_file, load = binf, lambda: torch.load(binf, map_location="cpu", weights_only=True)
    else:
        raise BnrError(f"{str(path)!r} has no {SAFETENSORS_WEIGHTS} or {BIN_WEIGHTS}; point to a saved adapter folder")
    try:
        state = load()
    except PermissionError:
        raise  # the CLI reports unreadable files with their path
    except Exception as e:  # safetensors, pickle and zip errors share no base class
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise BnrError(
            f"{str(weights_file)!r} is not a readable weights file ({type(e).__name__}: {first}); "
            "it is corrupt, truncated or not a PEFT adapter: re-save or re-download it"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise BnrError(f"{str(weights_file)!r} does not hold a dict of tensors; re-save the adapter")
    return state, weights_file


def _check_finite(path: Path, key: str, value: Tensor) -> None:
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = "NaN" if bool(torch.isnan(value).any()) else "Inf"
        raise BnrError(f"{str(path)!r}: {key!r} contains {bad} values; the adapter is broken, retrain or re-save it")


def _split_keys(path: Path, state: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    parts: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        m = _KEY_RE.match(key)
        if m is None:
            raise BnrError(f"{str(path)!r} holds weight {key!r} that is not a plain LoRA factor; retrain plain LoRA")
        if value.dim() != 2:
            raise BnrError(f"{str(path)!r}: {key!r} is not a Linear LoRA factor (shape {tuple(value.shape)})")
        if not value.is_floating_point():
            raise BnrError(f"{str(path)!r}: {key!r} has dtype {value.dtype}, not a float LoRA factor; re-save it")
        _check_finite(path, key, value)
        parts.setdefault(m["module"], {})[m["which"]] = value
    return parts


def module_scaling(cfg: dict[str, Any], module: str) -> tuple[int, float]:
    """(r, s) for `module` as PEFT computes them: rank_pattern/alpha_pattern, lora_alpha/r or /sqrt(r)."""
    from peft.utils.other import get_pattern_key

    rank_pattern: dict[str, int] = cfg.get("rank_pattern") or {}
    alpha_pattern: dict[str, float] = cfg.get("alpha_pattern") or {}
    r = int(rank_pattern.get(get_pattern_key(list(rank_pattern), module), cfg["r"]))
    alpha = float(alpha_pattern.get(get_pattern_key(list(alpha_pattern), module), cfg["lora_alpha"]))
    return r, alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def read_lora(path: str | Path, *, allow_buffer: bool = False) -> LoraFactors:
    """Read a PEFT LoRA adapter folder (safetensors or .bin) into per-module factors and scalings.

    Refuses BufferLoRA runs (unless `allow_buffer`, for the provider's own use), non-LoRA and unsupported
    LoRA variants, unreadable or corrupt files and non-finite factors with a one-line `BnrError`.
    """
    p = Path(path)
    if not allow_buffer:
        assert_no_buffer(p, "merge")
    cfg = _read_config(p)
    state, weights_file = _load_weights(p)
    modules: dict[str, LoraModule] = {}
    for name, ab in _split_keys(p, state).items():
        if set(ab) != {"A", "B"}:
            raise BnrError(f"{str(p)!r}: module {name!r} lacks lora_A or lora_B; re-save the adapter")
        r, s = module_scaling(cfg, name)
        A, B = ab["A"], ab["B"]
        if A.shape[0] != r or B.shape[1] != r:
            raise BnrError(f"{str(p)!r}: module {name!r} has rank {A.shape[0]} but the config says r={r}")
        modules[name] = LoraModule(A=A, B=B, scaling=s)
    if not modules:
        raise BnrError(f"{str(p)!r} holds no LoRA factors; point to a trained adapter")
    base = cfg.get("base_model_name_or_path")
    return LoraFactors(p, base, cfg.get("task_type"), modules, weights_file)


def check_adapter_files(path: str | Path) -> None:
    """Raise a one-line `BnrError` unless `path` holds a readable PEFT adapter with finite weights.

    Lighter than `read_lora` (any PEFT method, buffers allowed): used before PEFT itself loads an adapter,
    whose own errors on corrupt, empty or NaN files are tracebacks or silence.
    """
    p = Path(path)
    cfg_path = p / ADAPTER_CONFIG
    try:
        cfg: Any = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BnrError(f"{str(cfg_path)!r} is not valid JSON ({e}); re-save the adapter") from None
    if not isinstance(cfg, dict):
        raise BnrError(f"{str(cfg_path)!r} is not a JSON object (got {type(cfg).__name__}); re-save the adapter")
    if str(cfg.get("peft_type", "")).upper() == "LORA":
        _check_rank_and_alpha(cfg_path, cfg)
    state, weights_file = _load_weights(p)
    if not state:
        raise BnrError(f"{str(weights_file)!r} holds no tensors; point to a trained adapter")
    for key, value in state.items():
        _check_finite(p, key, value)


# ---------------------------------------------------------------- writing


def _atomic_save_safetensors(tensors: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        with writing(path):
            save_file(tensors, tmp, metadata={"format": "pt"})
        os.chmod(tmp, umask_mode())  # safetensors recreates the file 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _lora_config_dict(
    modules: dict[str, LoraModule], base_model_name_or_path: str | None, task_type: str | None
) -> dict[str, Any]:
    from peft import LoraConfig

    ranks = {name: m.rank for name, m in modules.items()}
    # Most common rank globally (ties -> larger); other ranks via rank/alpha patterns with alpha = r (scaling 1),
    # keyed by full module name as peft's own LoRA conversion does.
    r = max(Counter(ranks.values()).most_common(), key=lambda kv: (kv[1], kv[0]))[0]
    pattern = {name: rk for name, rk in ranks.items() if rk != r}
    config = LoraConfig(
        r=r,
        lora_alpha=r,
        lora_dropout=0.0,
        target_modules=sorted(ranks),
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        task_type=task_type,
        base_model_name_or_path=base_model_name_or_path,
        inference_mode=True,
    )
    out = config.to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in out.items()}


def write_lora(
    modules: dict[str, LoraModule], out_dir: str | Path, base_model_name_or_path: str | None, task_type: str | None
) -> Path:
    """Write `modules` as a standard PEFT LoRA adapter folder with effective scaling 1 in every module.

    Each module's scaling is folded into its B, so `PeftModel.from_pretrained(base, out_dir)` computes
    base + scaling * B @ A exactly. Both files are written atomically; returns `out_dir`.
    """
    if not modules:
        raise BnrError(f"no LoRA module to write to {str(out_dir)!r}; pass at least one module")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    for name, m in modules.items():
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = m.A.contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = (m.scaling * m.B).to(m.B.dtype).contiguous()
    _atomic_save_safetensors(tensors, out / SAFETENSORS_WEIGHTS)
    atomic_write_json(out / ADAPTER_CONFIG, _lora_config_dict(modules, base_model_name_or_path, task_type))
    return out


def rewrite_lora(src: str | Path, out_dir: str | Path, replaced: dict[str, LoraModule]) -> Path:
    """Copy the adapter folder `src` to `out_dir` with the factors of the modules in `replaced` swapped in.

    Everything else - the adapter config (ranks, alphas, scalings) and every other tensor - is copied as is,
    so untouched modules stay bit-identical. A replaced module keeps its rank and scaling (A: r x d_in,
    B: d_out x r, same shapes and dtypes as the originals)."""
    p = Path(src)
    factors = read_lora(p)
    state, _ = _load_weights(p)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, m in replaced.items():
        if name not in factors.modules:
            raise BnrError(f"{str(p)!r} has no LoRA module {name!r} to replace")
        old = factors.modules[name]
        if m.A.shape != old.A.shape or m.B.shape != old.B.shape:
            raise BnrError(f"module {name!r}: replacement factors change the shapes; keep rank and dims")
        for key in list(state):
            hit = _KEY_RE.match(key)
            if hit and hit["module"] == name:
                new = m.A if hit["which"] == "A" else m.B
                state[key] = new.to(state[key].dtype).contiguous()
    _atomic_save_safetensors(state, out / SAFETENSORS_WEIGHTS)
    shutil.copyfile(p / ADAPTER_CONFIG, out / ADAPTER_CONFIG)  # byte for byte (read_lora has validated it)
    return out
