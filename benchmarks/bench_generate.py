"""Throughput of the batched generation loop (`bnr.eval.generate`) against one prompt at a time.

Same model, same prompts, same greedy settings; both sides go through `generate` (batch_size=B vs 1), and the
completions are compared. Usage:

    python benchmarks/bench_generate.py [--prompts 64] [--batch-size 16] [--new-tokens 32] [--threads 1]
                                        [--hidden 256] [--layers 4] [--vocab 8000] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from typing import Any

import torch

from bnr.eval.generate import generate
from bnr.tiny import tiny_llama, word_tokenizer

WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "question",
    "safe",
    "harmful",
    "buffer",
    "reinforce",
    "user",
    "data",
    "sample",
    "token",
    "batch",
    "cache",
]


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 64))) for _ in range(n)]


def timed(model: Any, tok: Any, prompts: list[str], batch_size: int, new_tokens: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = generate(
        model,
        tok,
        prompts,
        max_new_tokens=new_tokens,
        batch_size=batch_size,
        progress=False,
        min_new_tokens=new_tokens,
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000, help="extra synthetic words in the vocabulary")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prompts = make_prompts(args.prompts)
    tok = word_tokenizer(prompts + WORDS + [f"w{i}" for i in range(args.vocab)], max_vocab=args.vocab + 100)
    model = (
        tiny_llama(
            len(tok), hidden=args.hidden, layers=args.layers, heads=8, intermediate=4 * args.hidden, max_positions=1024
        )
        .to(args.device)
        .eval()
    )
    timed(model, tok, prompts[:4], args.batch_size, 4)  # warm-up
    t_batch, out_batch = timed(model, tok, prompts, args.batch_size, args.new_tokens)
    t_single, out_single = timed(model, tok, prompts, 1, args.new_tokens)
    n_tok = args.prompts * args.new_tokens
    same = sum(a == b for a, b in zip(out_batch, out_single))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, device {args.device}, load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        f"model: Llama hidden {args.hidden}, {args.layers} layers, vocab {len(tok)}; {args.prompts} prompts of "
        f"8-64 words, {args.new_tokens} new tokens each (greedy, min_new_tokens={args.new_tokens})"
    )
    print(f"{'mode':<22}{'seconds':>10}{'tokens/s':>12}")
    print(f"{f'batched (bs={args.batch_size})':<22}{t_batch:>10.2f}{n_tok / t_batch:>12.1f}")
    print(f"{'one at a time':<22}{t_single:>10.2f}{n_tok / t_single:>12.1f}")
    print(f"speed-up: {t_single / t_batch:.2f}x; identical completions: {same}/{args.prompts}")


if __name__ == "__main__":
    main()
