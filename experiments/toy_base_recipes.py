"""Build the toy base with `toy.base` overrides into runs/toy-bases/NAME and print its first-word accuracy (%).

Usage: python experiments/toy_base_recipes.py '{"seed": 1, "train": {"lr": 0.002}}' NAME [split,split,...]
(the recipe table in docs/toy.md; the build gate is off here so that a failing recipe can be measured too).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bnr.toy.config import ToyBaseConfig, ToyConfig
from bnr.data.templates import build_prompt
from bnr.toy.base import build_base
from bnr.toy.world import split


def accuracy(model: object, tok: object, name: str, limit: int = 200) -> float:
    """% of the split's first `limit` items whose greedy answer starts with the gold answer's first word."""
    records = split(name)[:limit]
    ok = 0
    for i in range(0, len(records), 50):
        chunk = records[i : i + 50]
        prompts = [build_prompt("alpaca", r, tok) for r in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)  # type: ignore[operator]
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)  # type: ignore[attr-defined]
        for r, row in zip(chunk, out[:, enc.input_ids.shape[1] :]):
            ok += tok.decode(row, skip_special_tokens=True).strip().startswith(r.output.split()[0])  # type: ignore[attr-defined]
    return round(100 * ok / len(records), 1)


def main() -> None:
    torch.set_num_threads(1)
    over = json.loads(sys.argv[1])
    name = sys.argv[2]
    splits = sys.argv[3].split(",") if len(sys.argv) > 3 else ["eval_sst2", "base_sst2", "eval_agnews"]
    train_over = over.pop("train", {})
    b = ToyBaseConfig(**{"held_in_min": 0.0, **over})
    b = dataclasses.replace(b, train=dataclasses.replace(b.train, progress=False, **train_over))
    out = Path(f"runs/toy-bases/{name}")
    if (out / "toy_base.json").exists():
        info = json.loads((out / "toy_base.json").read_text())
    else:
        info = build_base(ToyConfig(base=b), out, progress=False)
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    res = {"name": name, "over": sys.argv[1], "loss": info["final_loss"], "build_s": info["build_wall_time_s"]}
    res.update({s: accuracy(model, tok, s) for s in splits})
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
