"""P2: the merge at Llama-3-8B shapes, factor space (`bnr.merge.qr_merge_factors`) vs the dense reference formed
the way the official script does it, and the full merged-model export vs peft's `merge_and_unload`.

Dense reference, per module (what the released `qr_merging.py` computes, re-implemented from METHOD.md): every
d_out x d_in product in float32 (dU = s_U B_U A_U, dR = s_R B_R A_R), Q from the reduced QR of B_eff, the
projection applied to the dense dR (dR - alpha Q (Q^T dR)), the sum cast to fp16 and added, times `scale`, to
the module's fp16 base weight. Its base weights are one preallocated fp16 matrix per shape (the official script
holds the whole 16 GB fp16 model). Error: both sides against METHOD.md in float64 with dense matrices.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch
from common import Figure, Scale, figure, interleaved, medians, peak_memory_mb
from shapes import lora_for, parameter_count, random_adapter_dir, random_llama, scratch_dir

from bnr import adapters
from bnr.merge import merge_adapters, qr_merge_factors, write_full_model, write_merged_adapter

ALPHA, TAU, SCALE = 0.1, 0.01, 0.5
MODULES = ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")


def module_shapes(d: int, kv: int, ffn: int) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of the paper's five target modules."""
    return {"q_proj": (d, d), "v_proj": (kv, d), "gate_proj": (ffn, d), "up_proj": (ffn, d), "down_proj": (d, ffn)}


Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def random_factors(layers: int, shapes: dict[str, tuple[int, int]], r: int, device: str) -> dict[str, Factors]:
    """Random (A_U, B_U, A_R, B_R) per module, float32, LoRA-like scales."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for layer in range(layers):
        for name, (d_out, d_in) in shapes.items():
            a_u, a_r = (torch.randn(r, d_in, generator=g) / d_in**0.5 for _ in range(2))
            b_u, b_r = (torch.randn(d_out, r, generator=g) * 0.02 for _ in range(2))
            out[f"model.layers.{layer}.{name}"] = (a_u.to(device), b_u.to(device), a_r.to(device), b_r.to(device))
    return out


def factor_merge(mods: dict[str, Factors], s: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    out = {}
    for name, (a_u, b_u, a_r, b_r) in mods.items():
        a_m, b_m, _ = qr_merge_factors(a_u, b_u, s, a_r, b_r, s, alpha=ALPHA, tau=TAU, scale=SCALE)
        out[name] = (a_m, b_m)
    return out


def dense_official(f: Factors, s: float, w0: torch.Tensor) -> torch.Tensor:
    """The official script's per-module merge: dense float32 products, dense projection, fp16 add into W0."""
    a_u, b_u, a_r, b_r = f
    d_r = s * (b_r @ a_r)
    lam, vec = torch.linalg.eigh(a_u @ a_u.T)
    keep = lam > TAU * lam.max()
    if keep.any():
        b_eff = b_u if bool(keep.all()) else b_u @ vec[:, keep]
        q, _ = torch.linalg.qr(b_eff, mode="reduced")
        d_r = d_r - ALPHA * (q @ (q.T @ d_r))
    delta = (s * (b_u @ a_u) + d_r).to(torch.float16)
    w0 += delta * SCALE
    return delta


def dense_merge(mods: dict[str, Factors], s: float, w0: dict[tuple[int, int], torch.Tensor]) -> None:
    for f in mods.values():
        dense_official(f, s, w0[(f[1].shape[0], f[0].shape[1])])


def reference64(f: Factors, s: float) -> torch.Tensor:
    """METHOD.md literally in float64: scale * (dU + (I - alpha Q Q^T) dR), dense (updated in place: one
    d_out x d_in float64 matrix, not one per term)."""
    a_u, b_u, a_r, b_r = (t.double() for t in f)
    lam, vec = torch.linalg.eigh(a_u @ a_u.T)
    keep = lam > TAU * lam.max()
    ref = torch.mm(b_r, a_r).mul_(s)  # dR
    if keep.any():
        q, _ = torch.linalg.qr(b_u if bool(keep.all()) else b_u @ vec[:, keep], mode="reduced")
        ref.addmm_(q, q.T @ ref, alpha=-ALPHA)  # (I - alpha Q Q^T) dR
    return ref.addmm_(b_u, a_u, alpha=s).mul_(SCALE)


def _max_abs(x: torch.Tensor) -> float:
    lo, hi = torch.aminmax(x)
    return max(-float(lo), float(hi))


def max_rel_errors(mods: dict[str, Factors], s: float) -> dict[str, float]:
    """max |X - ref| / max |ref| over the modules, for the factor merge and for the official dense fp16 delta."""
    err_f, err_d = 0.0, 0.0
    for f in mods.values():
        ref = reference64(f, s)
        a_m, b_m, _ = qr_merge_factors(*f[:2], s, *f[2:], s, alpha=ALPHA, tau=TAU, scale=SCALE)
        peak = _max_abs(ref)
        diff = torch.addmm(ref, b_m.double(), a_m.double(), alpha=-1)  # ref - B_m A_m
        err_f = max(err_f, _max_abs(diff) / peak)
        w0 = torch.zeros(ref.shape, dtype=torch.float16, device=ref.device)
        dense_official(f, s, w0)
        err_d = max(err_d, _max_abs(diff.copy_(w0).sub_(ref)) / peak)
        del ref, w0, diff
    return {"factor": err_f, "official_dense_fp16": err_d}


def merge_figures(scale: Scale) -> list[Figure]:
    if scale.smoke:
        layers, dense_layers, dims, r = 2, 1, (64, 16, 224), 4
    else:
        layers, dense_layers, dims, r = 32, 2, (4096, 1024, 14336), 32
    shapes = module_shapes(*dims)
    s = 64 / 32  # lora_alpha / r of the paper's adapters
    mods = random_factors(layers, shapes, r, scale.device)
    subset = {n: f for n, f in mods.items() if int(n.split(".")[2]) < dense_layers}
    one_layer = {n: f for n, f in mods.items() if int(n.split(".")[2]) == 0}
    w0 = {(o, i): torch.zeros(o, i, dtype=torch.float16, device=scale.device) for o, i in shapes.values()}
    mem = {  # one layer each (five modules), measured apart from the timing
        "factor_one_layer": peak_memory_mb(lambda: factor_merge(one_layer, s), scale.device)[0],
        "dense_one_layer": peak_memory_mb(lambda: dense_merge(one_layer, s, w0), scale.device)[0],
    }
    t = medians(
        interleaved(
            {
                "factor_subset": lambda: factor_merge(subset, s),
                "dense_subset": lambda: dense_merge(subset, s, w0),
                "factor_all": lambda: factor_merge(mods, s),
            },
            scale.reps,
            warmup=0,  # a dense warm-up would cost as much as a round; the memory runs above come first instead
            device=scale.device,
        )
    )
    w0.clear()
    errors = max_rel_errors(one_layer, s)  # all five module shapes; float64 dense references are costly
    dense_all_est = t["dense_subset"] * layers / dense_layers
    n_params = sum((2 * r) * (i + o) for o, i in shapes.values()) * layers
    full_params = parameter_count("llama3-8b") if not scale.smoke else sum(o * i for o, i in shapes.values()) * layers
    common = {
        "shapes": {k: list(v) for k, v in shapes.items()},
        "layers": layers,
        "r_user": r,
        "r_reinforce": r,
        "modules": len(mods),
        "dense_layers_timed": dense_layers,
        "knobs": {"alpha": ALPHA, "tau": TAU, "scale": SCALE},
    }
    return [
        figure(
            "P2.merge.speedup_measured",
            f"dense / factor time on the same {len(subset)} modules "
            f"({dense_layers} full layers), measured side by side",
            t["dense_subset"] / t["factor_subset"],
            ">= 100",
            seconds={"dense": t["dense_subset"], "factor": t["factor_subset"]},
            peak_mb=mem,
            detail=common,
        ),
        figure(
            "P2.merge.speedup_all_layers",
            f"dense (timed on {dense_layers} layers, scaled x{layers / dense_layers:g}"
            f") / factor (all {len(mods)} modules, measured)",
            dense_all_est / t["factor_all"],
            ">= 100",
            seconds={"dense_est": dense_all_est, "factor": t["factor_all"]},
            detail=common,
        ),
        figure(
            "P2.merge.max_rel_error",
            "max |factor - float64 dense reference| / max |reference| (layer 0, five modules)",
            errors["factor"],
            "<= 1e-5",
            detail={**common, "official_dense_fp16_error": errors["official_dense_fp16"]},
        ),
        figure(
            "P2.merge.deliverable_size",
            "full fp16 model bytes / rank r_U+r_R adapter bytes (fp16), computed",
            full_params / n_params,
            detail={
                "adapter_params": n_params,
                "adapter_fp16_bytes": 2 * n_params,
                "full_model_params": full_params,
                "full_fp16_bytes": 2 * full_params,
            },
        ),
    ]


def export_figure(shape: str, scale: Scale) -> Figure:
    """`write_full_model` (bnr) vs `PeftModel.from_pretrained` + `merge_and_unload` + `save_pretrained` (peft)."""
    from peft import PeftModel

    root = scratch_dir("p2")
    base = random_llama(shape)
    spec = lora_for(shape)
    result = merge_adapters(
        random_adapter_dir(base, adapters.USER, spec, root, seed=1),
        random_adapter_dir(base, adapters.REINFORCE, spec, root, seed=2),
        alpha=ALPHA,
        tau=TAU,
        scale=SCALE,
    )
    merged_dir = write_merged_adapter(result, root / "merged", None)
    out = {"bnr": root / "full-bnr", "peft": root / "full-peft"}
    models: dict[str, Any] = {}

    def bnr_export() -> None:
        models["bnr"] = write_full_model(base, result, out["bnr"])

    def peft_export() -> None:
        m = PeftModel.from_pretrained(copy.deepcopy(base), str(merged_dir)).merge_and_unload()
        m.save_pretrained(str(out["peft"]))
        models["peft"] = m

    mem: dict[str, float] = {}
    t = medians(interleaved({"bnr": bnr_export, "peft": peft_export}, scale.reps, memory=mem))
    sd_b, sd_p = models["bnr"].state_dict(), models["peft"].state_dict()
    diff = max(float((sd_b[k].double() - sd_p[k].double()).abs().max()) for k in sd_b)
    size = {
        k: sum(f.stat().st_size for f in Path(p).glob("*.safetensors"))
        for k, p in {"adapter": merged_dir, "full_model": out["bnr"]}.items()
    }
    shutil.rmtree(root, ignore_errors=True)
    return figure(
        f"P2.export.{shape}",
        "full merged model export: bnr write_full_model / peft merge_and_unload (+ save_pretrained both)",
        t["bnr"] / t["peft"],
        "<= 1.0",
        seconds=t,
        peak_mb=mem,
        detail={"max_abs_weight_diff": diff, "bytes_on_disk": size},
    )


def run(scale: Scale) -> list[Figure]:
    shapes = ["tiny"] if scale.smoke else ["toy", "smollm2-135m"]
    return merge_figures(scale) + [export_figure(shape, scale) for shape in shapes]
