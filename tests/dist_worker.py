"""Run by `torchrun` from tests/test_distributed.py: the training loop on N processes, interrupted and resumed.

argv: model_dir data_file out_dir. Trains a LoRA on the tiny model three ways - uninterrupted, and stopped after
3 steps then resumed from the checkpoint - and rank 0 saves both adapters' weights to out_dir/result.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bnr import adapters, distributed
from bnr.config import DataConfig, LoraConfig, ModelConfig, TrainConfig
from bnr.data.sources import load_records
from bnr.data.tokenize import encode_records
from bnr.models import load_model_and_tokenizer
from bnr.seeding import seed_everything
from bnr.train import train

torch.set_num_threads(1)


def lora_model(model_dir: str) -> tuple[torch.nn.Module, object]:
    seed_everything(3)
    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=model_dir, device="cpu"), for_training=True)
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = adapters.add_adapter(model, adapters.USER, lora)
    adapters.set_active(model, [adapters.USER], [adapters.USER])
    return model, tok


def trained(model_dir: str, examples: list, cfg: TrainConfig, ckpt: Path, stop_after: int | None) -> dict:
    model, tok = lora_model(model_dir)
    train(model, examples, cfg, seed=5, pad_id=tok.pad_token_id, checkpoint_dir=ckpt, stop_after=stop_after)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def main() -> None:
    model_dir, data, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    _, tok = lora_model(model_dir)
    examples = encode_records(tok, load_records(DataConfig(path=data)), "alpaca", 96)
    cfg = TrainConfig(lr=5e-3, max_steps=6, batch_size=5, grad_accum=2, save_every=1, progress=False)
    whole = trained(model_dir, examples, cfg, out / "whole", None)
    trained(model_dir, examples, cfg, out / "resumed", 3)
    resumed = trained(model_dir, examples, cfg, out / "resumed", None)
    if distributed.is_main():
        torch.save({"whole": whole, "resumed": resumed, "world": distributed.world_size()}, out / "result.pt")


if __name__ == "__main__":
    main()
