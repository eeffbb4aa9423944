"""Per-seed HS / over-refusal / FA of a sweep, one row per label (a sweep's `results.jsonl`, one line per cell).

    python scripts/sweep_seeds.py runs/toy-remedies/results.jsonl [SEED ...]   # default seeds: 42 30 50

The sweep's own tables give mean +- std over seeds; this shows the seeds themselves (a mean over a collapse and two
good seeds reads differently from three middling ones). A seed that has no cell is `-`.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any


def main(argv: list[str]) -> None:
    path, seeds = argv[0], [int(s) for s in argv[1:]] or [42, 30, 50]
    by: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                by[row["label"]][row["seed"]] = row
    head = " / ".join(str(s) for s in seeds)
    print(f"| row | HS ({head}) | over-refusal ({head}) | FA ({head}) |")
    print("|---|---:|---:|---:|")
    for label, cells in by.items():
        cols = [
            " / ".join(f"{cells[s][key]:.1f}" if s in cells and cells[s].get(key) is not None else "-" for s in seeds)
            for key in ("hs", "over_refusal", "fa")
        ]
        print(f"| {label} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
