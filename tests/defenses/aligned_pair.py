"""A tiny aligned/unaligned pair for the defenses that read W_aligned - W_unaligned (SafeLoRA, AsFT): the shared
tiny model is the aligned half; the unaligned half is the same model with seeded noise on its Linear weights."""

from __future__ import annotations

from pathlib import Path


def make_unaligned(aligned_dir: Path, out: Path, scale: float = 0.02, seed: int = 7) -> Path:
    """Save a copy of the model at `aligned_dir` whose Linear weights inside the blocks differ by seeded noise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(aligned_dir))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and ".layers." in name:
                mod.weight.add_(scale * torch.randn(mod.weight.shape, generator=g))
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(aligned_dir)).save_pretrained(str(out))
    return out


def pair_overrides(unaligned: Path, alignment: Path) -> list[str]:
    return [f"model.unaligned={unaligned}", f"user.alignment={alignment}"]
