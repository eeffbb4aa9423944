"""The hook-based statistics equal explicit `.grad` computations, and the analysis leaves the model untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bnr import adapters
from bnr.analysis.directions import build_specs
from bnr.analysis.grads import canonical_name, collect_sample_stats, find_modules
from bnr.analysis.scores import summarize
from bnr.config import PAPER_TARGETS, DataConfig, LoraConfig, ModelConfig
from bnr.data.sources import load_records
from bnr.data.tokenize import collate, encode_records
from bnr.lora_files import LoraModule
from bnr.models import load_model, load_tokenizer

TOL = 1e-5


def _setup(model_dir: Path, data: Path) -> tuple[torch.nn.Module, object, list]:
    cfg = ModelConfig(name_or_path=str(model_dir), device="cpu")
    tok = load_tokenizer(cfg)
    model = load_model(cfg)
    recs = load_records(DataConfig(path=str(data)))[:5]
    return model, tok, encode_records(tok, recs, "alpaca", 96)


def _random_directions(model: torch.nn.Module, r: int = 3, seed: int = 1) -> dict[str, LoraModule]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (_, lin) in find_modules(model, PAPER_TARGETS).items():
        A = torch.randn(r, lin.in_features, generator=g)
        out[name] = LoraModule(A=A, B=torch.randn(lin.out_features, r, generator=g), scaling=1.0)
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL * max(1.0, abs(b))


def test_hook_scores_equal_explicit_grad(tiny_model_dir: Path, tiny_data: dict[str, Path]) -> None:
    """<grad_W, BA>, ||grad_W||, LoRA A/B gradient norms and the loss, per sample, in padded batches."""
    model, tok, examples = _setup(tiny_model_dir, tiny_data["harmful"])
    spec = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=PAPER_TARGETS)
    model = adapters.add_adapter(model, adapters.USER, spec)
    lora: dict[str, LoraModule] = {}
    with torch.no_grad():
        for path, mod in model.named_modules():
            if hasattr(mod, "lora_B") and adapters.USER in getattr(mod, "lora_B", {}):
                mod.lora_B[adapters.USER].weight.normal_(0, 0.5)
                lora[canonical_name(path)] = LoraModule(
                    A=mod.lora_A[adapters.USER].weight.clone(),
                    B=mod.lora_B[adapters.USER].weight.clone(),
                    scaling=float(mod.scaling[adapters.USER]),
                )
    model.eval()
    directions = {"rand": _random_directions(model)}
    specs = build_specs(model, PAPER_TARGETS, directions, {"user": lora})
    stats = collect_sample_stats(model, examples, specs, pad_id=tok.pad_token_id, batch_size=3)

    mods = find_modules(model, PAPER_TARGETS)
    lora_mods = {canonical_name(p): m for p, m in model.named_modules() if hasattr(m, "lora_A")}
    for p in model.parameters():
        p.requires_grad_(False)
    for name, (_, lin) in mods.items():
        lin.weight.requires_grad_(True)
        lora_mods[name].lora_A[adapters.USER].weight.requires_grad_(True)
        lora_mods[name].lora_B[adapters.USER].weight.requires_grad_(True)
    checked = 0
    for i, ex in enumerate(examples):
        model.zero_grad(set_to_none=True)
        out = model(**collate([ex], tok.pad_token_id))
        out.loss.backward()
        assert _close(float(stats.loss[i]), out.loss.item())
        for name, (_, lin) in mods.items():
            g = lin.weight.grad.double()
            f = directions["rand"][name]
            assert _close(float(stats.grad_sq[name][i].sqrt()), g.norm().item())
            assert _close(float(stats.inner[name]["rand"][i]), (g * (f.B.double() @ f.A.double())).sum().item())
            gA = lora_mods[name].lora_A[adapters.USER].weight.grad.double()
            gB = lora_mods[name].lora_B[adapters.USER].weight.grad.double()
            assert _close(float(stats.lora_sq[name]["user.A"][i].sqrt()), gA.norm().item())
            assert _close(float(stats.lora_sq[name]["user.B"][i].sqrt()), gB.norm().item())
            checked += 1
    assert checked == len(examples) * len(mods) and len(mods) == 10


def test_probe_lora_gradient_is_grad_w_times_a(tiny_model_dir: Path, tiny_data: dict[str, Path]) -> None:
    """A fresh LoRA (B = 0) has grad_A = 0 and grad_B = s * grad_W A^T."""
    model, tok, examples = _setup(tiny_model_dir, tiny_data["benign"])
    specs = build_specs(model, PAPER_TARGETS, {}, probe_r=4, probe_alpha=8, seed=3)
    stats = collect_sample_stats(model, examples[:2], specs, pad_id=tok.pad_token_id, batch_size=2)
    mods = find_modules(model, PAPER_TARGETS)
    for p in model.parameters():
        p.requires_grad_(False)
    for _, lin in mods.values():
        lin.weight.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    model(**collate([examples[0]], tok.pad_token_id)).loss.backward()
    for name, (_, lin) in mods.items():
        probe = specs[name].loras["probe"]
        expect = (probe.scaling * lin.weight.grad.double() @ probe.A.double().T).norm().item()
        assert _close(float(stats.lora_sq[name]["probe.B"][0].sqrt()), expect)
        assert float(stats.lora_sq[name]["probe.A"][0]) == 0.0


def test_analysis_is_read_only(tiny_model_dir: Path, tiny_data: dict[str, Path]) -> None:
    model, tok, examples = _setup(tiny_model_dir, tiny_data["harmful"])
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    specs = build_specs(model, PAPER_TARGETS, {"rand": _random_directions(model)}, probe_r=2, probe_alpha=4)
    collect_sample_stats(model, examples, specs, pad_id=tok.pad_token_id, batch_size=2)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
        assert p.dtype == before[n].dtype
        assert p.requires_grad == flags[n]
        assert p.grad is None
    assert model.training


@pytest.mark.parametrize("sign", ["update", "gradient"])
def test_sign_convention_flips_scores(tiny_model_dir: Path, tiny_data: dict[str, Path], sign: str) -> None:
    model, tok, examples = _setup(tiny_model_dir, tiny_data["harmful"])
    specs = build_specs(model, PAPER_TARGETS, {"rand": _random_directions(model)})
    stats = collect_sample_stats(model, examples, specs, pad_id=tok.pad_token_id)
    upd = summarize(stats, specs, sign="update", eps=1e-8)["rows"]
    grd = summarize(stats, specs, sign="gradient", eps=1e-8)["rows"]
    for a, b in zip(upd, grd):
        assert a["S"]["rand"] == pytest.approx(-b["S"]["rand"])
        assert a["D"]["rand"] >= 0 and b["D"]["rand"] >= 0
        assert a["D"]["rand"] - b["D"]["rand"] == pytest.approx(-a["S"]["rand"])  # D_u - D_g = mean(-S_u)
    layers = [r for r in upd if r["type"] == "all"]
    assert [r["layer"] for r in layers] == [0, 1]
