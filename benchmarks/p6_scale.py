"""P6: scale-out checks on randomly initialised models of real shapes (nothing is downloaded).

  ddp   - `bnr.train.train` for a few steps, launched by torchrun on N GPUs (or run plainly on one): steps, wall time,
          tokens/s, peak memory; with N > 1 also the adapter's largest difference to the 1-process reference run
          that rank 0 computes afterwards on its own GPU (the loop's equality claim, at real shape and bf16).
  vllm  - `eval.backend=vllm` (`bnr.eval.vllm_backend.VllmModel`): the random base saved with a word-level tokenizer,
          a random LoRA of the paper's merged rank (r_U + r_R = 64) served as a vLLM LoRA, N greedy completions;
          prompts/s, and how many completions equal `transformers.generate`'s (random weights make near-ties, so
          this is a smoke figure, not an accuracy).

Writes one JSON per check to --out. `benchmarks/gpu_scale.sh` runs both; see docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from shapes import random_adapter_dir, random_examples, random_llama, scratch_dir

from bnr import adapters, distributed
from bnr.config import LoraConfig, TrainConfig
from bnr.seeding import seed_everything
from bnr.train import train

PAPER_MERGED = LoraConfig(r=64, alpha=128, dropout=0.0)


def _lora_model(shape: str, device: str) -> Any:
    seed_everything(0)
    model = random_llama(shape, device=device, dtype=torch.bfloat16)
    model = adapters.add_adapter(model, adapters.USER, LoraConfig(r=32, alpha=64, dropout=0.0))
    adapters.set_active(model, [adapters.USER], [adapters.USER])
    return model


def _train(shape: str, steps: int, batch: int, length: int, device: str) -> tuple[Any, float]:
    model = _lora_model(shape, device)
    examples = random_examples(model.config.vocab_size, batch * steps, length)
    cfg = TrainConfig(lr=1e-4, max_steps=steps, batch_size=batch, progress=False, warmup_ratio=0.0)
    _sync(device)
    t0 = time.perf_counter()
    train(model, examples, cfg, seed=0, pad_id=0)
    _sync(device)
    return model, time.perf_counter() - t0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _trainable(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu() for n, p in model.named_parameters() if p.requires_grad}


def ddp(args: argparse.Namespace) -> dict[str, Any] | None:
    cuda = args.device == "cuda"
    device = f"cuda:{distributed.local_rank()}" if cuda else "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model, wall = _train(args.shape, args.steps, args.batch, args.length, device)
    record: dict[str, Any] = {
        "check": "ddp",
        "shape": args.shape,
        "world_size": distributed.world_size(),
        "steps": args.steps,
        "global_batch": args.batch,
        "seq_len": args.length,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(args.steps * args.batch * args.length / wall, 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
    }
    if not distributed.is_main():
        return None
    if distributed.launched():  # the 1-process reference, on rank 0's GPU (the other ranks are done training)
        launched = _trainable(model)
        del model
        with _single_process():
            reference, _ = _train(args.shape, args.steps, args.batch, args.length, device)
        ref = _trainable(reference)
        record["max_abs_diff_vs_1_process"] = max(float((launched[k] - ref[k]).abs().max()) for k in ref)
        record["max_abs_weight"] = max(float(v.abs().max()) for v in ref.values())
    return record


class _single_process:
    """Run a block as if unlaunched (WORLD_SIZE=1) inside a launched process."""

    def __enter__(self) -> None:
        import os

        self.saved = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK")}
        os.environ["WORLD_SIZE"], os.environ["RANK"] = "1", "0"

    def __exit__(self, *exc: Any) -> None:
        import os

        for k, v in self.saved.items():
            if v is not None:
                os.environ[k] = v


def vllm(args: argparse.Namespace) -> dict[str, Any]:
    from bnr.eval.generate import generate
    from bnr.eval.vllm_backend import VllmModel
    from bnr.tiny import save_model, word_tokenizer

    root = scratch_dir("vllm")
    words = [f"w{i}" for i in range(2000)]
    tok = word_tokenizer([" ".join(words)], max_vocab=4000)
    base = random_llama(args.shape, dtype=torch.bfloat16)
    save_model(base, tok, root / "base")
    adapter = random_adapter_dir(base, adapters.USER, PAPER_MERGED, root)
    prompts = [" ".join(words[i : i + 24]) for i in range(0, 24 * args.prompts, 24)]
    t0 = time.perf_counter()
    engine = VllmModel(str(root / "base"), str(adapter), dtype="bfloat16", gpu_memory_utilization=0.5)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    texts = generate(engine, tok, prompts, max_new_tokens=args.tokens, progress=False)
    gen_s = time.perf_counter() - t0
    del engine
    hf = adapters.attach_frozen(base.to("cuda"), adapter, adapters.USER, "merged")
    n_check = min(16, len(prompts))
    ref = generate(hf, tok, prompts[:n_check], max_new_tokens=args.tokens, batch_size=16, progress=False)
    return {
        "check": "vllm",
        "shape": args.shape,
        "lora_rank": PAPER_MERGED.r,
        "prompts": len(prompts),
        "max_new_tokens": args.tokens,
        "engine_load_s": round(load_s, 2),
        "generate_s": round(gen_s, 3),
        "prompts_per_s": round(len(prompts) / gen_s, 1),
        "equal_to_transformers": f"{sum(a == b for a, b in zip(texts, ref))}/{n_check}",
        "gpu": torch.cuda.get_device_name(0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("check", choices=["ddp", "vllm"])
    p.add_argument("--shape", default="smollm2-135m")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="ddp only; cpu = a smoke run")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="global micro-batch (split across the processes)")
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args()
    record = ddp(args) if args.check == "ddp" else vllm(args)
    if record is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"p6_{args.check}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record))


if __name__ == "__main__":
    main()
