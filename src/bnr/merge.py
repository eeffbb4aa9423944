"""QR merge of ReinforceLoRA into UserLoRA, in factor space (METHOD.md, "After user fine-tuning").

Per adapted module with dU = s_u B_U A_U and dR = s_r B_R A_R (s = lora_alpha / r, the LoRA scalings),
the merged delta c_U dU + c_R (I - alpha Q Q^T) dR is exactly a LoRA of rank r_U + r_R:

    B_m = [c_U s_u B_U, c_R (I - alpha Q Q^T) s_r B_R],  A_m = [A_U ; A_R],  scaling 1,

with decoupled merge strengths c_U (`user_scale`) and c_R (`reinforce_scale`); the paper's merge is
c_U = c_R = `scale` (0.5), and a strength left as None means `scale`. ReinforceLoRA may be restricted to a set
of layers (`reinforce_layers`): modules outside it get no dR (their merged factors are UserLoRA's alone),

where Q spans UserLoRA's effective output subspace (reduced QR of B_U restricted to the eigenvectors of
A_U A_U^T above tau * max eigenvalue). Nothing d_out x d_in (or d_out x d_out) is ever formed except in
`write_full_model`, block of rows by block.

Adapter folders are read and written by `bnr.lora_files`; this module walks their modules, merges them
(`merge_adapters`, with the method registry `MERGE_METHODS`) and writes the result as a PEFT LoRA folder
(`write_merged_adapter`) or as a full merged model (`write_full_model`).
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import torch
from torch import Tensor

from bnr.artifacts import hash_files
from bnr.errors import BnrError
from bnr.lora_files import LoraFactors, LoraModule, read_lora, write_lora
from bnr.registry import Registry

log = logging.getLogger(__name__)

_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
DIAGNOSTICS = "merge_diagnostics.json"

Diag = dict[str, Any]
MergeFn = Callable[..., tuple[Tensor, Tensor, Diag]]


@dataclass
class MergeResult:
    """Merged factors (scaling 1) per module, per-module diagnostics and a run summary."""

    modules: dict[str, LoraModule]
    diagnostics: dict[str, Diag]
    summary: dict[str, Any] = field(default_factory=dict)
    base_model_name_or_path: str | None = None
    task_type: str | None = None


@dataclass(frozen=True)
class MergeMethod:
    """A merge rule for modules in both adapters, and whether reinforce-only modules are kept."""

    combine: MergeFn
    uses_reinforce: bool = True


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")


# ---------------------------------------------------------------- pure math


def check_knobs(
    alpha: float, tau: float, scale: float, user_scale: float | None = None, reinforce_scale: float | None = None
) -> None:
    """Raise a `BnrError` unless alpha in [0, 1], tau in [0, 1), scale > 0, user_scale >= 0, reinforce_scale >= 0.

    user_scale 0 is the ReinforceLoRA alone on the base (with alpha 0, exactly reinforce_scale * dR)."""
    if not 0.0 <= alpha <= 1.0:
        raise BnrError(f"merge alpha={alpha} is out of range; use a value in [0, 1] (0.1 in the paper)")
    if not 0.0 <= tau < 1.0:
        raise BnrError(f"merge tau={tau} is out of range; use a value in [0, 1) (0.01 in the paper)")
    if not scale > 0.0 or not math.isfinite(scale):
        raise BnrError(f"merge scale={scale} must be a positive number (0.5 in the paper's code)")
    if user_scale is not None and (not user_scale >= 0.0 or not math.isfinite(user_scale)):
        raise BnrError(f"merge user_scale={user_scale} must be a number >= 0 (or null: = scale)")
    if reinforce_scale is not None and (not reinforce_scale >= 0.0 or not math.isfinite(reinforce_scale)):
        raise BnrError(f"merge reinforce_scale={reinforce_scale} must be a number >= 0 (or null: = scale)")


def strengths(
    scale: float, user_scale: float | None = None, reinforce_scale: float | None = None
) -> tuple[float, float]:
    """(c_U, c_R): the merge strengths of dU and dR; None means `scale` (the paper's c_U = c_R = scale)."""
    return (scale if user_scale is None else user_scale, scale if reinforce_scale is None else reinforce_scale)


def effective_basis(A_u: Tensor, B_u: Tensor, tau: float) -> tuple[Tensor | None, int]:
    """Orthonormal basis Q of UserLoRA's effective output subspace and the effective rank |K|.

    K = {i : l_i > tau * max l} for the eigenvalues l of A_U A_U^T. Q is None when K is empty.
    """
    lam, V = torch.linalg.eigh(A_u @ A_u.T)
    keep = lam > tau * lam.max()
    k = int(keep.sum())
    if k == 0:
        return None, 0
    B_eff = B_u if k == A_u.shape[0] else B_u @ V[:, keep]
    if not bool(B_eff.abs().max() > 0):
        return None, k  # dU = 0 (e.g. an untrained LoRA): QR would invent directions, so project nothing
    Q, _ = torch.linalg.qr(B_eff, mode="reduced")
    return Q, k


def factor_norm(B: Tensor, A: Tensor) -> float:
    """Frobenius norm of B @ A from r x r products: ||B A||^2 = tr((B^T B)(A A^T))."""
    sq = torch.trace((B.T @ B) @ (A @ A.T))
    return math.sqrt(max(float(sq), 0.0))


# Above this condition number of B_eff^T B_eff the projector is taken from a Householder QR of B_eff (the
# spec's definition); below it the normal equations give the same Q Q^T to ~1e-10 relative, without the QR.
_GRAM_COND_MAX = 1e6


def _trace_product(X: Tensor, Y: Tensor) -> float:
    """tr(X Y) for symmetric X, Y (sum of the elementwise product), clamped at 0."""
    return max(float((X * Y).sum()), 0.0)


def _projector_coefficients(G_u: Tensor, V_k: Tensor, full: bool) -> Tensor | None:
    """P (r_u x r_u) with Q Q^T = B_u P B_u^T for Q spanning B_eff = B_u V_K, from G_u = B_u^T B_u alone.

    None when B_eff is zero (dU = 0: project nothing) or too ill-conditioned for the normal equations.
    """
    G_eff = G_u if full else V_k.T @ G_u @ V_k
    ev = torch.linalg.eigvalsh(G_eff)
    if not bool(ev[-1] > 0) or not bool(ev[0] * _GRAM_COND_MAX > ev[-1]):
        return None
    inv = torch.cholesky_inverse(torch.linalg.cholesky(G_eff))
    return inv if full else V_k @ inv @ V_k.T


def _factor_merge(
    A_u: Tensor,
    B_u: Tensor,
    s_u: float,
    A_r: Tensor,
    B_r: Tensor,
    s_r: float,
    *,
    alpha: float,
    tau: float,
    c_u: float,
    c_r: float,
    out_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Diag]:
    """c_U s_u B_U A_U + c_R (I - alpha Q Q^T) s_r B_R A_R as factors (B_m in `out_dtype`), computed in float64;
    norms from r x r Gram matrices.

    One float64 copy of [B_U, B_R] is the only d_out-sized work space: its Gram matrix gives every norm and the
    projection Q Q^T B_R = B_U P (B_U^T B_R) is applied in place in it; the strengths are applied after the cast.
    """
    f64, r_u, r_r = torch.float64, int(A_u.shape[0]), int(A_r.shape[0])
    B = torch.empty(B_u.shape[0], r_u + r_r, dtype=f64, device=B_u.device)
    B[:, :r_u].copy_(B_u.detach())
    B[:, r_u:].copy_(B_r.detach())
    G = B.T @ B
    G_u, X, G_r = G[:r_u, :r_u], G[:r_u, r_u:], G[r_u:, r_u:]
    A_u64, A_r64 = A_u.detach().to(f64), A_r.detach().to(f64)
    GA_u, GA_r = A_u64 @ A_u64.T, A_r64 @ A_r64.T
    lam, V = torch.linalg.eigh(GA_u)
    keep = lam > tau * lam.max()
    k = int(keep.sum())
    Bu, Br = B[:, :r_u], B[:, r_u:]
    removed_gram = torch.zeros_like(G_r)  # Gram of Q Q^T B_R (before alpha)
    if k and alpha:
        P = _projector_coefficients(G_u, V[:, keep], k == r_u)
        if P is not None:
            M = P @ X  # Q Q^T B_R = B_U M
            removed_gram = X.T @ M
            Br.addmm_(Bu, M, alpha=-alpha)
        else:
            Q, _ = effective_basis(A_u64, Bu, tau)
            if Q is not None:
                C = Q.T @ Br
                removed_gram = C.T @ C
                Br.sub_(Q @ C, alpha=alpha)
    norm_dr = s_r * math.sqrt(_trace_product(G_r, GA_r))
    removed = s_r * alpha * math.sqrt(_trace_product(removed_gram, GA_r))
    tilde_gram = G_r - (2 * alpha - alpha * alpha) * removed_gram
    diag: Diag = {
        "presence": "both",
        "effective_rank": k,
        "r_user": r_u,
        "r_reinforce": r_r,
        "norm_dU": s_u * math.sqrt(_trace_product(G_u, GA_u)),
        "norm_dR": norm_dr,
        "norm_dR_tilde": s_r * math.sqrt(_trace_product(tilde_gram, GA_r)),
        "removed_fraction": removed / norm_dr if norm_dr > 0 else 0.0,
    }
    col = torch.tensor([c_u * s_u] * r_u + [c_r * s_r] * r_r, dtype=f64, device=B.device)
    B_m = B.to(out_dtype).mul_(col.to(out_dtype))  # cast first: one pass at the output's width
    return torch.cat([A_u.detach(), A_r.detach()], dim=0), B_m, diag


def qr_merge_factors(
    A_u: Tensor,
    B_u: Tensor,
    s_u: float,
    A_r: Tensor,
    B_r: Tensor,
    s_r: float,
    *,
    alpha: float = 0.1,
    tau: float = 0.01,
    scale: float = 0.5,
    user_scale: float | None = None,
    reinforce_scale: float | None = None,
) -> tuple[Tensor, Tensor, Diag]:
    """QR merge of one module in factor space; returns (A_m, B_m, diagnostics) with scaling 1.

    A: r x d_in, B: d_out x r, s = lora_alpha / r. The delta is c_U dU + c_R (I - alpha Q Q^T) dR with
    (c_U, c_R) = `strengths(scale, user_scale, reinforce_scale)`. Computed in float64, returned in A_u's dtype.
    """
    check_knobs(alpha, tau, scale, user_scale, reinforce_scale)
    c_u, c_r = strengths(scale, user_scale, reinforce_scale)
    dtype = A_u.dtype
    A_m, B_m, diag = _factor_merge(
        A_u, B_u, s_u, A_r, B_r, s_r, alpha=alpha, tau=tau, c_u=c_u, c_r=c_r, out_dtype=dtype
    )
    return A_m.to(dtype), B_m, diag


def naive_merge_factors(
    A_u: Tensor,
    B_u: Tensor,
    s_u: float,
    A_r: Tensor,
    B_r: Tensor,
    s_r: float,
    *,
    tau: float = 0.01,
    scale: float = 0.5,
    user_scale: float | None = None,
    reinforce_scale: float | None = None,
    **_: Any,
) -> tuple[Tensor, Tensor, Diag]:
    """Plain scaled sum c_U dU + c_R dR (the QR merge with alpha = 0)."""
    return qr_merge_factors(
        A_u,
        B_u,
        s_u,
        A_r,
        B_r,
        s_r,
        alpha=0.0,
        tau=tau,
        scale=scale,
        user_scale=user_scale,
        reinforce_scale=reinforce_scale,
    )


def user_only_factors(
    A_u: Tensor,
    B_u: Tensor,
    s_u: float,
    A_r: Tensor,
    B_r: Tensor,
    s_r: float,
    *,
    scale: float = 0.5,
    user_scale: float | None = None,
    **_: Any,
) -> tuple[Tensor, Tensor, Diag]:
    """UserLoRA alone at c_U dU; ReinforceLoRA is dropped (an ablation)."""
    c_u, _c_r = strengths(scale, user_scale)
    A_m, B_m, diag = merge_one_sided(A_u, B_u, s_u, scale=c_u, presence="both", r_reinforce=int(A_r.shape[0]))
    diag["norm_dR"] = factor_norm(s_r * B_r.detach().double(), A_r.detach().double())
    diag["removed_fraction"] = 1.0 if diag["norm_dR"] > 0 else 0.0
    return A_m, B_m, diag


def merge_one_sided(
    A: Tensor, B: Tensor, s: float, *, scale: float, presence: str, r_reinforce: int = 0
) -> tuple[Tensor, Tensor, Diag]:
    """A module present in one adapter only: (A, scale * s * B), no projection (`scale`: that side's strength)."""
    A64, B64 = A.detach().double(), s * B.detach().double()
    user = presence != "reinforce_only"
    norm = factor_norm(B64, A64)
    diag: Diag = {
        "presence": presence,
        "effective_rank": 0,
        "r_user": int(A.shape[0]) if user else 0,
        "r_reinforce": r_reinforce if user else int(A.shape[0]),
        "norm_dU": norm if user else 0.0,
        "norm_dR": 0.0 if user else norm,
        "norm_dR_tilde": 0.0 if user else norm,
        "removed_fraction": 0.0,
    }
    return A.detach().clone(), (scale * B64).to(A.dtype), diag


MERGE_METHODS.add("qr", MergeMethod(qr_merge_factors), "QR merge: c_U dU + c_R (I - alpha QQ^T) dR (the paper's)")
MERGE_METHODS.add("naive", MergeMethod(naive_merge_factors), "plain sum c_U dU + c_R dR (alpha = 0)")
MERGE_METHODS.add("none", MergeMethod(user_only_factors, uses_reinforce=False), "UserLoRA only, c_U dU (ablation)")


# ---------------------------------------------------------------- merging adapters


def _check_compatible(user: LoraFactors, reinforce: LoraFactors, allow_base_mismatch: bool) -> None:
    bu, br = user.base_model_name_or_path, reinforce.base_model_name_or_path
    if bu and br and bu != br:
        if not allow_base_mismatch:
            raise BnrError(
                f"UserLoRA was trained on {bu!r} but ReinforceLoRA on {br!r}; use adapters of the same base "
                "(or allow_base_mismatch=true if they are the same weights)"
            )
        log.warning("merging adapters of different bases: %r and %r (allow_base_mismatch)", bu, br)
    common = sorted(set(user.modules) & set(reinforce.modules))
    if not common:
        raise BnrError(
            f"UserLoRA ({str(user.path)!r}) and ReinforceLoRA ({str(reinforce.path)!r}) adapt no module in common; "
            "train them with the same target_modules"
        )
    for name in common:
        u, r = user.modules[name], reinforce.modules[name]
        if u.A.shape[1] != r.A.shape[1] or u.B.shape[0] != r.B.shape[0]:
            raise BnrError(
                f"module {name!r} has shape {tuple(u.B.shape[:1]) + tuple(u.A.shape[1:])} in UserLoRA but "
                f"{tuple(r.B.shape[:1]) + tuple(r.A.shape[1:])} in ReinforceLoRA; use adapters of the same base"
            )


def layer_index(module: str) -> int | None:
    """The block index of a module name: its first integer component (3 in `model.layers.3.mlp.up_proj`)."""
    m = _LAYER_INDEX.search(module)
    return int(m.group(1)) if m else None


def _in_layers(module: str, layers: frozenset[int] | None) -> bool:
    if layers is None:
        return True
    idx = layer_index(module)
    return idx is not None and idx in layers


def _merge_module(
    u: LoraModule | None,
    r: LoraModule | None,
    method: MergeMethod,
    knobs: dict[str, Any],
    *,
    with_reinforce: bool = True,
) -> tuple[LoraModule | None, Diag]:
    c_u, c_r = strengths(knobs["scale"], knobs.get("user_scale"), knobs.get("reinforce_scale"))
    if u is not None and r is not None and with_reinforce:
        A, B, diag = method.combine(u.A, u.B, u.scaling, r.A, r.B, r.scaling, **knobs)
    elif u is not None and r is not None:  # outside the reinforce layers: UserLoRA alone, no dR
        A, B, diag = user_only_factors(u.A, u.B, u.scaling, r.A, r.B, r.scaling, scale=c_u)
        diag["outside_reinforce_layers"] = True
    elif u is not None:
        A, B, diag = merge_one_sided(u.A, u.B, u.scaling, scale=c_u, presence="user_only")
    else:
        assert r is not None
        A, B, diag = merge_one_sided(r.A, r.B, r.scaling, scale=c_r, presence="reinforce_only")
        if not method.uses_reinforce or not with_reinforce:
            diag.update(norm_dR_tilde=0.0, removed_fraction=1.0, dropped=True)
            return None, diag
    return LoraModule(A=A, B=B, scaling=1.0), diag


def _summary(diags: dict[str, Diag], modules: dict[str, LoraModule]) -> dict[str, Any]:
    both = [d for d in diags.values() if d["presence"] == "both"]

    def total(key: str) -> float:
        return math.sqrt(sum(d[key] ** 2 for d in diags.values()))

    return {
        "n_modules": len(modules),
        "n_common": len(both),
        "user_only": sorted(n for n, d in diags.items() if d["presence"] == "user_only"),
        "reinforce_only": sorted(n for n, d in diags.items() if d["presence"] == "reinforce_only"),
        "mean_effective_rank": sum(d["effective_rank"] for d in both) / len(both),
        "mean_removed_fraction": sum(d["removed_fraction"] for d in both) / len(both),
        "total_norm_dU": total("norm_dU"),
        "total_norm_dR": total("norm_dR"),
        "total_norm_dR_tilde": total("norm_dR_tilde"),
        "max_rank": max((m.rank for m in modules.values()), default=0),
        "outside_reinforce_layers": sorted(n for n, d in diags.items() if d.get("outside_reinforce_layers")),
    }


class MergeKnobs(TypedDict, total=False):
    """The merge settings `merge_adapters` / `merge_factors` take (the `merge.*` config fields of that name)."""

    method: str
    alpha: float
    tau: float
    scale: float
    user_scale: float | None
    reinforce_scale: float | None
    reinforce_layers: list[int] | None
    allow_base_mismatch: bool


def knobs_of(m: Any, **override: Any) -> MergeKnobs:
    """The merge settings of a `MergeConfig` (anything with those fields), with `override` on top."""
    knobs = {k: getattr(m, k) for k in MergeKnobs.__annotations__}
    return MergeKnobs(**{**knobs, **override})  # type: ignore[typeddict-item]


def merge_adapters(user_dir: str | Path, reinforce_dir: str | Path, **knobs: Unpack[MergeKnobs]) -> MergeResult:
    """Merge ReinforceLoRA into UserLoRA module by module (see METHOD.md); nothing dense is formed. The knobs are
    checked by `merge_factors` (the CLI's config validation checks them before any file is read)."""
    return merge_factors(read_lora(user_dir), read_lora(reinforce_dir), **knobs)


def merge_factors(
    user: LoraFactors,
    reinforce: LoraFactors,
    *,
    method: str = "qr",
    alpha: float = 0.1,
    tau: float = 0.01,
    scale: float = 0.5,
    user_scale: float | None = None,
    reinforce_scale: float | None = None,
    reinforce_layers: list[int] | None = None,
    allow_base_mismatch: bool = False,
) -> MergeResult:
    """`merge_adapters` on adapters already read (calibration merges the same pair many times)."""
    check_knobs(alpha, tau, scale, user_scale, reinforce_scale)
    _check_compatible(user, reinforce, allow_base_mismatch)
    merge_method = MERGE_METHODS.get(method)
    layers = None if reinforce_layers is None else frozenset(int(i) for i in reinforce_layers)
    if layers and not any(_in_layers(n, layers) for n in reinforce.modules):
        present = sorted({i for i in map(layer_index, reinforce.modules) if i is not None})
        raise BnrError(
            f"merge.reinforce_layers={sorted(layers)} matches no ReinforceLoRA module; its layers are {present}"
        )
    knobs: dict[str, Any] = {
        "alpha": alpha,
        "tau": tau,
        "scale": scale,
        "user_scale": user_scale,
        "reinforce_scale": reinforce_scale,
    }
    modules: dict[str, LoraModule] = {}
    diags: dict[str, Diag] = {}
    for name in sorted(set(user.modules) | set(reinforce.modules)):
        u, r = user.modules.get(name), reinforce.modules.get(name)
        merged, diags[name] = _merge_module(u, r, merge_method, knobs, with_reinforce=_in_layers(name, layers))
        if merged is not None:
            modules[name] = merged
    c_u, c_r = strengths(scale, user_scale, reinforce_scale)
    summary = {
        "method": method,
        **knobs,
        "strengths": {"user": c_u, "reinforce": c_r},
        "reinforce_layers": None if layers is None else sorted(layers),
        **_summary(diags, modules),
    }
    if summary["user_only"] or summary["reinforce_only"]:
        log.warning(
            "adapters target different modules: %d only in UserLoRA, %d only in ReinforceLoRA (merged unprojected)",
            len(summary["user_only"]),
            len(summary["reinforce_only"]),
        )
    summary["inputs"] = {
        role: {"path": str(f.path), "weights_sha256": hash_files([f.weights_file]), "base": f.base_model_name_or_path}
        for role, f in (("user", user), ("reinforce", reinforce))
    }
    return MergeResult(modules, diags, summary, user.base_model_name_or_path, user.task_type)


def diagnostics_json(result: MergeResult) -> dict[str, Any]:
    """JSON-ready diagnostics: the summary (method, knobs, inputs, totals) and per-module numbers."""
    return {"summary": result.summary, "modules": result.diagnostics}


# ---------------------------------------------------------------- writers


def write_merged_adapter(result: MergeResult, out_dir: str | Path, base_model_name_or_path: str | None) -> Path:
    """Write the merged factors as a standard PEFT LoRA adapter (effective scaling 1 in every module).

    `PeftModel.from_pretrained(base, out_dir)` then computes base + merged delta exactly.
    """
    if not result.modules:
        raise BnrError("the merge produced no module to write; check the adapters and merge method")
    out = write_lora(result.modules, out_dir, base_model_name_or_path, result.task_type)
    log.info("wrote merged adapter (%d modules) to %s", len(result.modules), out)
    return out


def module_weight(model: torch.nn.Module, name: str, m: LoraModule) -> Tensor:
    """The weight of `model` that adapter module `name` (`m`) changes, checked to exist with the adapter's shape."""
    try:
        layer = model.get_submodule(name)
    except AttributeError as e:
        raise BnrError(f"base model has no module {name!r}; use the base the adapters were trained on") from e
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, Tensor) or tuple(weight.shape) != (m.B.shape[0], m.A.shape[1]):
        shape = None if not isinstance(weight, Tensor) else tuple(weight.shape)
        raise BnrError(f"module {name!r} of the base has weight shape {shape}, not the adapter's; wrong base model")
    return weight


# Rows of a weight merged per block by `add_delta`: blocks of about this many float64 numbers (512 KiB) stay in
# the CPU's cache, where one d_out x d_in float64 delta and copy would not (4x slower, measured on SmolLM2-135M).
_DELTA_BLOCK = 1 << 16


def add_delta(weight: Tensor, m: LoraModule) -> None:
    """weight += scaling * B A, computed in float64 and rounded once to the weight's dtype, block of rows by block
    (the same numbers as one dense float64 delta, without d_out x d_in float64 temporaries)."""
    B = m.B.to(weight.device, torch.float64)
    A = m.A.to(weight.device, torch.float64)
    step = max(1, _DELTA_BLOCK // max(1, int(weight.shape[1]))) if weight.device.type == "cpu" else weight.shape[0]
    for i in range(0, int(weight.shape[0]), step):
        rows = weight[i : i + step]
        rows.copy_(rows.to(torch.float64).addmm_(B[i : i + step], A, alpha=m.scaling))


@contextmanager
def merged_into(model: torch.nn.Module, result: MergeResult) -> Iterator[torch.nn.Module]:
    """Add the merged deltas to `model`'s weights in place for the `with` block; the original weights are
    restored bit for bit afterwards (a calibration search evaluates many merges on one loaded base)."""
    saved: dict[str, tuple[Tensor, Tensor]] = {}
    try:
        with torch.no_grad():
            for name, m in result.modules.items():
                weight = module_weight(model, name, m)
                saved[name] = (weight, weight.detach().clone())
                add_delta(weight, m)
        yield model
    finally:
        with torch.no_grad():
            for weight, original in saved.values():
                weight.copy_(original)


@torch.no_grad()
def write_full_model(
    base_model: torch.nn.Module,
    result: MergeResult,
    out_dir: str | Path,
    *,
    inplace: bool = False,
    save_dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """Add each module's dense delta (in float64, a cache-sized block of rows at a time) to a copy of the base
    weights and `save_pretrained` it to `out_dir` (cast to `save_dtype` first when given). Returns the merged model.
    """
    model = base_model if inplace else copy.deepcopy(base_model)
    for name, m in result.modules.items():
        add_delta(module_weight(model, name, m), m)
    save = getattr(model, "save_pretrained", None)
    if save is None:
        raise BnrError("write_full_model needs a transformers model (with save_pretrained)")
    if save_dtype is not None:
        model.to(save_dtype)
    save(str(out_dir))
    log.info("wrote full merged model (%d modules changed) to %s", len(result.modules), out_dir)
    return model
