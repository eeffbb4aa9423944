"""Per-sample statistics -> Safety Gradient Score, damage score and gradient norms per module, type and layer.

S = (1/N) sum_i sigma <g_i, v> / (||v|| + eps),  D = (1/N) sum_i relu(-sigma <g_i, v> / (||v|| + eps)),
with sigma = -1 for the `update` convention (scores the step direction -g that fine-tuning takes) and +1 for
`gradient` (the raw gradient). A layer's row treats the layer's analysed modules as one weight vector:
<g_l, v_l> = sum_m <g_m, v_m>, ||v_l||^2 = sum_m ||v_m||^2, ||g_l||^2 = sum_m ||g_m||^2.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Literal

import torch
from torch import Tensor

from bnr.analysis.grads import ModuleSpec, SampleStats
from bnr.merge import factor_norm

Sign = Literal["update", "gradient"]
ALL = "all"


def sign_factor(sign: Sign) -> float:
    return -1.0 if sign == "update" else 1.0


def direction_norms(specs: dict[str, ModuleSpec]) -> dict[str, dict[str, float]]:
    """{module: {direction: ||B A||_F}}."""
    return {n: {d: factor_norm(f.B.double(), f.A.double()) for d, f in s.directions.items()} for n, s in specs.items()}


def _score_stats(inner: Tensor, norm: float, sign: Sign, eps: float) -> dict[str, float]:
    s = sign_factor(sign) * inner / (norm + eps)
    return {"S": float(s.mean()), "D": float(torch.relu(-s).mean()), "S_std": float(s.std()) if len(s) > 1 else 0.0}


def _norm_stats(sq: Tensor) -> dict[str, float]:
    n = sq.clamp(min=0).sqrt()
    return {"mean": float(n.mean()), "std": float(n.std()) if len(n) > 1 else 0.0}


def _row(
    layer: int,
    kind: str,
    module: str | None,
    grad_sq: Tensor,
    inner: dict[str, Tensor],
    vnorm: dict[str, float],
    lora_sq: dict[str, Tensor],
    sign: Sign,
    eps: float,
) -> dict[str, Any]:
    g = _norm_stats(grad_sq)
    row: dict[str, Any] = {
        "layer": layer,
        "type": kind,
        "module": module,
        "grad_norm": g["mean"],
        "grad_norm_std": g["std"],
        "S": {},
        "D": {},
        "S_std": {},
        "v_norm": dict(vnorm),
    }
    for d, ip in inner.items():
        st = _score_stats(ip, vnorm[d], sign, eps)
        row["S"][d], row["D"][d], row["S_std"][d] = st["S"], st["D"], st["S_std"]
    row["lora_grad_norm"] = {k: _norm_stats(v)["mean"] for k, v in sorted(lora_sq.items())}
    return row


def summarize(stats: SampleStats, specs: dict[str, ModuleSpec], *, sign: Sign, eps: float) -> dict[str, Any]:
    """Rows per module, per (layer, type) and per layer (type `all`), plus the mean loss."""
    norms = direction_norms(specs)
    rows = []
    groups: dict[tuple[int, str], list[str]] = defaultdict(list)
    for name, spec in sorted(specs.items(), key=lambda kv: (kv[1].layer, kv[0])):
        rows.append(
            _row(
                spec.layer,
                spec.kind,
                name,
                stats.grad_sq[name],
                stats.inner[name],
                norms[name],
                stats.lora_sq[name],
                sign,
                eps,
            )
        )
        groups[(spec.layer, ALL)].append(name)
    for (layer, _), names in sorted(groups.items()):
        rows.append(_aggregate_row(layer, names, stats, norms, sign, eps))
    return {
        "n": len(stats.ids),
        "loss": float(stats.loss.mean()),
        "loss_std": float(stats.loss.std()) if len(stats.ids) > 1 else 0.0,
        "rows": rows,
    }


def _aggregate_row(
    layer: int, names: list[str], stats: SampleStats, norms: dict[str, dict[str, float]], sign: Sign, eps: float
) -> dict[str, Any]:
    grad_sq = sum((stats.grad_sq[n] for n in names), torch.zeros_like(stats.loss))
    inner: dict[str, Tensor] = {}
    vsq: dict[str, float] = defaultdict(float)
    lora_sq: dict[str, Tensor] = {}
    for n in names:
        for d, ip in stats.inner[n].items():
            inner[d] = inner.get(d, torch.zeros_like(ip)) + ip
            vsq[d] += norms[n][d] ** 2
        for k, v in stats.lora_sq[n].items():
            lora_sq[k] = lora_sq.get(k, torch.zeros_like(v)) + v
    vnorm = {d: math.sqrt(v) for d, v in vsq.items()}
    return _row(layer, ALL, None, grad_sq, inner, vnorm, lora_sq, sign, eps)


def band_means(rows: list[dict[str, Any]], n_layers: int) -> dict[str, Any]:
    """Means over the first half of the layers (early/middle, where the paper sees S != 0) and the second half."""
    layer_rows = [r for r in rows if r["type"] == ALL and r["layer"] >= 0]
    half = n_layers // 2 if n_layers > 1 else 1
    out: dict[str, Any] = {}
    for band, sel in (
        ("early", [r for r in layer_rows if r["layer"] < half]),
        ("late", [r for r in layer_rows if r["layer"] >= half]),
    ):
        if not sel:
            continue
        entry: dict[str, Any] = {
            "layers": [r["layer"] for r in sel],
            "grad_norm": sum(r["grad_norm"] for r in sel) / len(sel),
        }
        for key in ("S", "D"):
            entry[key] = {d: sum(r[key][d] for r in sel) / len(sel) for d in sel[0][key]}
        out[band] = entry
    return out
