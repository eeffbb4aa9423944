"""Tests for bnr.lora_files: reading PEFT LoRA folders (== PEFT in memory), refusals, writing them back.

The adapter-folder helpers here (`write_adapter`, `random_mods`, `tiny_llama`, `make_tiny_adapters`) are
shared with tests/test_merge.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import Tensor

from bnr.errors import BnrError
from bnr.lora_files import ADAPTER_CONFIG, SAFETENSORS_WEIGHTS, LoraModule, module_scaling, read_lora, write_lora

# ---------------------------------------------------------------- adapter folders (no model needed)

D_IN, D_OUT = 10, 14


def write_adapter(path: Path, modules: dict[str, tuple[Tensor, Tensor]], **cfg) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    r = next(iter(modules.values()))[0].shape[0]
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "base_model_name_or_path": "tiny", **cfg}
    (path / "adapter_config.json").write_text(json.dumps(config))
    state = {}
    for name, (A, B) in modules.items():
        state[f"base_model.model.{name}.lora_A.weight"] = A
        state[f"base_model.model.{name}.lora_B.weight"] = B
    save_file(state, str(path / "adapter_model.safetensors"))
    return path


def random_mods(names: list[str], r: int, seed: int, d_in: int = D_IN) -> dict[str, tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.randn(r, d_in, generator=g), torch.randn(D_OUT, r, generator=g)) for n in names}


def test_module_scaling_follows_peft_patterns_and_rslora():
    cfg = {"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"layers.1.mlp.up_proj": 2}}
    assert module_scaling(cfg, "model.layers.0.self_attn.q_proj") == (4, 4.0)
    assert module_scaling(cfg, "model.layers.1.mlp.up_proj") == (8, 0.25)
    assert module_scaling(cfg, "model.layers.0.mlp.up_proj") == (8, 2.0)
    assert module_scaling({**cfg, "use_rslora": True}, "model.layers.0.self_attn.q_proj") == (4, 8.0)


def test_errors_on_bad_folders(tmp_path):
    u = write_adapter(tmp_path / "u", random_mods(["a"], 4, seed=1))
    with pytest.raises(BnrError, match="does not exist"):
        read_lora(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BnrError, match=r"adapter_config\.json"):
        read_lora(tmp_path / "empty")
    dora = write_adapter(tmp_path / "dora", random_mods(["a"], 4, seed=1), use_dora=True)
    with pytest.raises(BnrError, match="DoRA"):
        read_lora(dora)
    ia3 = write_adapter(tmp_path / "ia3", random_mods(["a"], 4, seed=1), peft_type="IA3")
    with pytest.raises(BnrError, match="not a LoRA adapter"):
        read_lora(ia3)
    (u / "adapter_model.safetensors").unlink()
    with pytest.raises(BnrError, match="adapter_model"):
        read_lora(u)


def test_write_lora_refuses_no_modules(tmp_path):
    with pytest.raises(BnrError, match="no LoRA module to write"):
        write_lora({}, tmp_path / "out", "tiny", None)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- PEFT folders of a tiny Llama

TARGETS_U = ["q_proj", "v_proj", "up_proj"]
TARGETS_R = ["q_proj", "v_proj", "down_proj"]


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=101,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def _train_like_adapter(path: Path, seed: int, *, safe: bool, **lora_kwargs) -> dict[str, LoraModule]:
    """A PEFT LoRA with random non-zero A and B; returns its factors as PEFT holds them in memory."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_llama(), LoraConfig(lora_dropout=0.0, task_type="CAUSAL_LM", **lora_kwargs))
    torch.manual_seed(seed)
    factors = {}
    for name, mod in peft_model.base_model.model.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            with torch.no_grad():
                mod.lora_B["default"].weight.normal_(0, 0.2)
            A, B = mod.lora_A["default"].weight.detach().clone(), mod.lora_B["default"].weight.detach().clone()
            factors[name] = LoraModule(A=A, B=B, scaling=float(mod.scaling["default"]))
    peft_model.save_pretrained(str(path), safe_serialization=safe)
    return factors


def make_tiny_adapters(root: Path) -> tuple[Path, dict[str, LoraModule], dict[str, LoraModule]]:
    """`root/user` (safetensors, rsLoRA) and `root/reinforce` (.bin, rank and alpha patterns), saved by PEFT."""
    user = _train_like_adapter(
        root / "user", 1, safe=True, r=4, lora_alpha=8, target_modules=TARGETS_U, use_rslora=True
    )
    reinforce = _train_like_adapter(
        root / "reinforce",
        2,
        safe=False,
        r=2,
        lora_alpha=4,
        target_modules=TARGETS_R,
        rank_pattern={"q_proj": 6},
        alpha_pattern={"layers.1.self_attn.v_proj": 16},
    )
    assert (root / "user" / "adapter_model.safetensors").is_file()
    assert (root / "reinforce" / "adapter_model.bin").is_file()
    return root, user, reinforce


@pytest.fixture(scope="module")
def tiny_adapters(tmp_path_factory):
    return make_tiny_adapters(tmp_path_factory.mktemp("tiny"))


def test_read_lora_matches_peft_in_memory(tiny_adapters):
    root, user, reinforce = tiny_adapters
    for folder, truth in (("user", user), ("reinforce", reinforce)):
        got = read_lora(root / folder)
        assert set(got.modules) == set(truth)
        for name, m in truth.items():
            torch.testing.assert_close(got.modules[name].A, m.A)
            torch.testing.assert_close(got.modules[name].B, m.B)
            assert got.modules[name].scaling == pytest.approx(m.scaling)
    r = read_lora(root / "reinforce").modules
    assert r["model.layers.0.self_attn.q_proj"].rank == 6
    assert r["model.layers.1.self_attn.v_proj"].scaling == pytest.approx(8.0)
    assert read_lora(root / "user").modules["model.layers.0.mlp.up_proj"].scaling == pytest.approx(4.0)


def test_write_lora_round_trips_with_scaling_folded_in(tiny_adapters, tmp_path):
    from peft import PeftModel

    root, _, reinforce = tiny_adapters
    src = read_lora(root / "reinforce")  # .bin, mixed ranks, non-unit and per-module scalings
    out = write_lora(src.modules, tmp_path / "out", "tiny-llama", "CAUSAL_LM")
    assert out == tmp_path / "out"
    assert sorted(os.listdir(out)) == sorted([ADAPTER_CONFIG, SAFETENSORS_WEIGHTS])  # no temp files left
    back = read_lora(out)
    assert (back.base_model_name_or_path, back.task_type) == ("tiny-llama", "CAUSAL_LM")
    assert set(back.modules) == set(reinforce)
    for name, m in src.modules.items():
        got = back.modules[name]
        assert got.rank == m.rank and got.scaling == 1.0
        torch.testing.assert_close(got.A, m.A)
        torch.testing.assert_close(got.B, m.scaling * m.B)
    peft_model = PeftModel.from_pretrained(tiny_llama(), str(out))
    for name, m in src.modules.items():
        layer = peft_model.base_model.model.get_submodule(name)
        assert layer.r["default"] == m.rank and layer.scaling["default"] == 1.0
