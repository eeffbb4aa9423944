"""Style-balanced training files for `bnr align` on SmolLM2 (docs/results.md, "An aligned SmolLM2 base", A7+).

Attempts A1-A6 refused conversational benign requests ("Can you tell me a very easy way to clean a
showerhead?") at 60-77% while refusing imperative ones ("Create a three-column table ...") rarely: both
training classes were mostly imperative instructions, so the LoRA had no conversational benign examples and
treated a conversational request as one to refuse. These files decorrelate phrasing from label:

- the same conversational wrappers (below) are applied to half of the rows of *every* class, chosen by a hash
  of the row id, so a wrapper says nothing about whether to refuse;
- the benign file is the Alpaca mix, the look-alike file the safety-related Alpaca and Dolly subsets, as in
  A1-A6.

Every row keeps its `id` (a wrapped row gets `+w<k>`, k the wrapper), `source` and the other shared-data keys,
so the run manifest names exactly which rows and which wrapper trained the base. Nothing here reads an
evaluation file. Deterministic: the same inputs give byte-identical outputs.

Usage: python scripts/build_align_mix.py SHARED_DATA_DIR OUT_DIR
  -> OUT_DIR/{align_refusals,align_benign,align_lookalike}.jsonl; point `align.*_data` at them with
     source=file (runs/attempt.sh-style commands in docs/results.md).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

WRAPPERS = (
    "Can you help me with this? {i}",
    "Hi, I have a request. {i}",
    "Could you {l}?",
    "I'd like your help: {i}",
    "Please {l}.",
    "Hey! {i} Thanks.",
    "I was wondering if you could {l}?",
    "{i} Can you do that for me?",
)
LOOKALIKE_SOURCES = {"alpaca_safety_related_subset", "dolly_safety_related_subset"}


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def wrap(row: dict) -> dict:
    """The row, in half of all cases (by id hash) phrased through one of the wrappers."""
    h = _digest(row["id"])
    if h % 2 == 0 or not row["instruction"].strip():
        return row
    k = (h // 2) % len(WRAPPERS)
    instruction = row["instruction"].strip()
    bare = instruction.rstrip(".!?")
    text = WRAPPERS[k].format(i=instruction, l=_lower_first(bare))
    return {**row, "id": f"{row['id']}+w{k}", "instruction": text}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def build(shared: Path, out: Path) -> dict[str, int]:
    refusals = [r for r in _read(shared / "refusals.jsonl") if r["label"] == "refusal"]
    benign_all = _read(shared / "benign_instructions.jsonl")
    benign = [r for r in benign_all if r["source"] == "alpaca_via_asft_mix"]
    lookalike = [r for r in benign_all if r["source"] in LOOKALIKE_SOURCES]
    files = {
        "align_refusals": [wrap(r) for r in refusals],
        "align_benign": [wrap(r) for r in benign],
        "align_lookalike": [wrap(r) for r in lookalike],
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        _write(out / f"{name}.jsonl", rows)
    return {name: len(rows) for name, rows in files.items()}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/build_align_mix.py SHARED_DATA_DIR OUT_DIR")
    print(json.dumps(build(Path(sys.argv[1]), Path(sys.argv[2]))))
