"""`bnr eval` under a launcher, recording how many prompts this process generated (test_distributed.py).

Usage: python -m torch.distributed.run ... tests/eval_worker.py COUNTS_DIR [bnr eval overrides ...]
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from bnr.cli import main

gen = importlib.import_module("bnr.eval.generate")  # the module (bnr.eval re-exports its function by that name)

counts, argv = Path(sys.argv[1]), sys.argv[2:]
real = gen.generate


def counted(model, tokenizer, prompts, **kwargs):  # type: ignore[no-untyped-def]
    with open(counts / f"rank{os.environ.get('RANK', '0')}.txt", "a") as f:
        f.write(f"{len(prompts)}\n")
    return real(model, tokenizer, prompts, **kwargs)


gen.generate = counted
sys.exit(main(["eval", *argv]))
