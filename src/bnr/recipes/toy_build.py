"""`bnr toy build`: find the aligned toy base in the cache, install the shipped one, or train it; report what it does.

The base is an ordinary Hugging Face model folder under $BNR_CACHE/toy (default ~/.cache/bnr/toy), keyed by the
hash of the world and `toy.base`; `model.name_or_path: builtin:toy` resolves to it. The build also evaluates the
base on the toy benchmarks (HS, over-refusal, FA on the three tasks) and stores that in `base_eval.json`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from bnr.artifacts import atomic_write_json
from bnr.config import Config

log = logging.getLogger(__name__)
BASE_EVAL = "base_eval.json"


def run(cfg: Config) -> Path:
    from bnr.seeding import torch_threads

    with torch_threads(cfg.toy.threads):  # restored after: `run` is also called from Python
        return _run(cfg)


def _run(cfg: Config) -> Path:
    from bnr.toy.base import BUILD_INFO, toy_base_path
    from bnr.toy.world import TASKS

    started = time.time()
    path = toy_base_path(cfg.toy, progress=cfg.toy.base.train.progress)
    info = json.loads((path / BUILD_INFO).read_text())
    scores_file = path / BASE_EVAL
    if not scores_file.is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from bnr.toy.evaluate import evaluate

        model = AutoModelForCausalLM.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        scores = evaluate(
            model, tokenizer, list(TASKS), template=cfg.toy.base.template, batch_size=cfg.toy.eval_batch_size
        )
        atomic_write_json(scores_file, scores.row())
    scores_row = json.loads(scores_file.read_text())
    print(f"toy base: {path}")
    print(
        f"  {info['parameters'] / 1e6:.2f}M parameters, vocab {info['vocab_size']}, trained {info['steps']} steps "
        f"in {info['train_wall_time_s']:.0f} s (final loss {info['final_loss']:.3f})"
    )
    print("  " + ", ".join(f"{k} {v:.1f}%" for k, v in scores_row.items()))
    print(f"  (this command: {time.time() - started:.0f} s; use it as model.name_or_path=builtin:toy)")
    return path
