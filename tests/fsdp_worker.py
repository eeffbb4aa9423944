"""Run by `torchrun` from tests/test_fsdp.py: the training loop on N processes, FSDP-sharded when launched with
`ACCELERATE_USE_FSDP=true FSDP_VERSION=2` (what `accelerate launch --use_fsdp --fsdp_version 2` sets).

argv: model_dir data_file buffer_dir out_dir. For each buffer mode (none, merged, separate) trains a UserLoRA on the
tiny model uninterrupted, and stopped after 3 steps then resumed from the checkpoint; every rank saves the
uninterrupted adapter with `adapters.save_adapter` into out_dir/rank<r>-<mode>, and rank 0 writes the gathered
weights to out_dir/result.pt.
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
LORA = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def user_model(model_dir: str, buffer: str, mode: str) -> tuple[torch.nn.Module, object]:
    seed_everything(3)
    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=model_dir, device="cpu"), for_training=True)
    frozen = []
    if mode != "none":
        model = adapters.attach_frozen(model, buffer, adapters.BUFFER, mode)  # type: ignore[arg-type]
        frozen = [adapters.BUFFER] if mode == "separate" else []
    model = adapters.add_adapter(model, adapters.USER, LORA)
    adapters.set_active(model, [*frozen, adapters.USER], [adapters.USER])
    return model, tok


def trained(args: list[str], mode: str, examples: list, ckpt: Path, stop_after: int | None) -> tuple:
    model, tok = user_model(args[0], args[2], mode)
    cfg = TrainConfig(lr=5e-3, max_steps=6, batch_size=5, grad_accum=2, save_every=1, progress=False)
    train(model, examples, cfg, seed=5, pad_id=tok.pad_token_id, checkpoint_dir=ckpt, stop_after=stop_after)
    weights = {n: distributed.full_tensor(p.detach()).clone() for n, p in model.named_parameters() if p.requires_grad}
    return model, weights


def main() -> None:
    args, out = sys.argv[1:4], Path(sys.argv[4])
    _, tok = user_model(args[0], args[2], "none")
    examples = encode_records(tok, load_records(DataConfig(path=args[1])), "alpaca", 96)
    result: dict = {"world": distributed.world_size()}
    for mode in ("none", "merged", "separate"):
        model, whole = trained(args, mode, examples, out / f"{mode}-whole", None)
        result[f"sharded-{mode}"] = distributed.is_sharded(model)
        adapters.save_adapter(model, adapters.USER, _mkdir(out / f"rank{distributed.rank()}-{mode}"))
        trained(args, mode, examples, out / f"{mode}-resumed", 3)
        result[mode] = whole, trained(args, mode, examples, out / f"{mode}-resumed", None)[1]
    if distributed.is_main():
        torch.save(result, out / "result.pt")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
