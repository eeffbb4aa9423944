"""Randomly initialised models of real shapes, built from a config (no download), and random training batches."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch

from bnr import adapters
from bnr.config import LoraConfig
from bnr.data.tokenize import IGNORE_INDEX, Example

# LlamaConfig fields of the shapes the suite uses (published configs; weights are random)
SHAPES: dict[str, dict[str, Any]] = {
    # the smoke test's model: seconds for everything
    "tiny": dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    # the toy world's base (bnr.config.ToyBaseConfig defaults; vocabulary of the toy tokenizer)
    "toy": dict(vocab_size=435, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4),
    # HuggingFaceTB/SmolLM2-135M
    "smollm2-135m": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        rope_theta=100000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    # meta-llama/Meta-Llama-3-8B(-Instruct)
    "llama3-8b": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_theta=500000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    ),
}
PAPER_LORA = LoraConfig(r=32, alpha=64, dropout=0.1)
TOY_LORA = LoraConfig(r=8, alpha=16, dropout=0.1)


def llama_config(shape: str) -> Any:
    from transformers import LlamaConfig

    fields = {"tie_word_embeddings": True, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    return LlamaConfig(**{**fields, **SHAPES[shape]})


def random_llama(shape: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Any:
    """A LlamaForCausalLM of `shape` with random weights (built directly on `device`)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(llama_config(shape)).to(dtype)  # type: ignore[arg-type]
    return model.eval()


def parameter_count(shape: str) -> int:
    """Parameters of the full model of `shape`, counted on the meta device (nothing allocated)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return int(LlamaForCausalLM(llama_config(shape)).num_parameters())


def lora_for(shape: str) -> LoraConfig:
    return TOY_LORA if shape in ("tiny", "toy") else PAPER_LORA


def random_examples(vocab: int, n: int, length: int, seed: int = 0) -> list[Example]:
    """`n` examples of exactly `length` tokens; the first half is the (masked) prompt."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(4, vocab, (length,), generator=g).tolist()
        labels = [IGNORE_INDEX] * (length // 2) + ids[length // 2 :]
        out.append(Example(ids, labels, f"x{i}"))
    return out


def random_adapter_dir(base: Any, name: str, spec: LoraConfig, root: Path, seed: int = 1) -> Path:
    """A trained-looking PEFT adapter for `base` (random non-zero B) saved under `root/name`."""
    model = adapters.add_adapter(copy.deepcopy(base), name, spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if f"lora_B.{name}" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    adapters.save_adapter(model, name, out)
    return out


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bnr-bench-{prefix}-"))
