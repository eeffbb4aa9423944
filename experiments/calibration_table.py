"""Markdown table for docs/results.md from a calibration sweep (`bnr sweep -c toy-calibrate`): HS, over-refusal,
FA and cost (wall seconds: the user's training, plus the search for bnr-calibrated) per defense, mean +- std over
seeds, and the aligned base from an eval run (the sweep's `base/eval` with `sweep.include_base=true`). Extra rows
LABEL=EVAL:MERGED read `<cell>/EVAL` (an eval run) and `<cell>/MERGED` (its merge run) in every bnr cell, for
merges made beside the sweep. Run it from the folder the sweep ran in (cells name their user runs relative to it).
Usage: python experiments/calibration_table.py SWEEP_DIR BASE_EVAL_DIR [LABEL=EVAL:MERGED ...]
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from bnr.eval.tables import stat
from bnr.orchestrate.grid import read_cell

NAMES = {"none": "SFT", "bnr": "BnR, paper merge (scale 0.5, alpha 0.1)", "bnr-calibrated": "BnR, calibrated"}


def _cost(cell: Path, merged_dir: str = "final") -> tuple[float, float | None]:
    where = read_cell(cell)  # {"user": <sweep>/users/<key>, "deliverable": ...}
    user = json.loads((where["user"] / "manifest.json").read_text())["training"]["train_wall_time_s"]
    merged = cell / merged_dir / "manifest.json"
    search = json.loads(merged.read_text()).get("calibration", {}).get("cost") if merged.is_file() else None
    return user, (search["calibration_wall_time_s"] if search else None)


def _metrics(eval_dir: Path) -> list[float]:
    return [next(iter(m.values())) for m in json.loads((eval_dir / "manifest.json").read_text())["metrics"].values()]


def main(sweep: Path, base_eval: Path, extra: list[str]) -> str:
    rows = [json.loads(x) for x in (sweep / "results.jsonl").read_text().splitlines()]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        user, search = _cost(sweep / "cells" / r["cell"])
        groups[r["defense"]].append({**r, "train_s": user, "search_s": search})
    for item in extra:
        label, dirs = item.split("=", 1)
        eval_dir, merged_dir = dirs.split(":")
        for r in rows:
            cell = sweep / "cells" / r["cell"]
            if r["defense"] == "bnr" and (cell / eval_dir / "manifest.json").is_file():
                hs, o, fa = _metrics(cell / eval_dir)
                user, search = _cost(cell, merged_dir)
                groups[label].append({**r, "hs": hs, "over_refusal": o, "fa": fa, "train_s": user, "search_s": search})
    vals = _metrics(base_eval)
    out = [
        "| method | HS (%) | over-refusal (%) | FA (%) | cost: user training (s) | cost: search (s) | seeds |",
        "|---|---|---|---|---|---|---|",
        f"| aligned base | {vals[0]:.1f} | {vals[1]:.1f} | {vals[2]:.1f} | - | - | - |",
    ]
    for d, rs in groups.items():
        search = [r["search_s"] for r in rs if r["search_s"] is not None]
        cells = [stat([r[k] for r in rs]).text() for k in ("hs", "over_refusal", "fa", "train_s")]
        seeds = ",".join(str(r["seed"]) for r in rs)
        out.append(f"| {NAMES.get(d, d)} | {' | '.join(cells)} | {stat(search).text() if search else '-'} | {seeds} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]))
