"""The field's instruction / input / output record, read from JSONL, JSON or CSV files."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bnr.errors import BnrError

CANONICAL = ("instruction", "input", "output")


@dataclass(frozen=True)
class Record:
    """One sample: `instruction` (+ optional `input`) -> `output`. `id` is unique within its source."""

    id: str
    instruction: str
    input: str = ""
    output: str = ""
    label: str | None = None
    source: str = ""
    category: str | None = None
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def with_output(self, output: str) -> Record:
        return Record(**{**asdict(self), "output": output})

    def digest(self) -> str:
        """Content hash (instruction, input, output) for data manifests."""
        h = hashlib.sha256("\x1f".join((self.instruction, self.input, self.output)).encode())
        return h.hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        return d


def records_from_rows(
    rows: list[dict[str, Any]],
    *,
    where: str,
    fields: dict[str, str] | None = None,
    require_output: bool = True,
    id_prefix: str = "",
) -> list[Record]:
    """Map raw rows to records. `fields` maps canonical names to the file's keys (e.g. {"output": "response"})."""
    fmap = {
        k: (fields or {}).get(k, k) for k in ("id", "instruction", "input", "output", "label", "category", "system")
    }
    out: list[Record] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BnrError(f"{where}: row {i + 1} is not an object")
        needed = ["instruction", "output"] if require_output else ["instruction"]
        for key in needed:
            if fmap[key] not in row:
                raise BnrError(
                    f"{where}: row {i + 1} has no field {fmap[key]!r} (has: {', '.join(sorted(row))}); "
                    f"map it with fields.{key}=<column>"
                )
        instr = row[fmap["instruction"]]
        if not isinstance(instr, str) or not instr.strip():
            raise BnrError(f"{where}: row {i + 1} has an empty or non-text {fmap['instruction']!r}")
        rid = row.get(fmap["id"])
        out.append(
            Record(
                id=str(rid) if rid is not None else f"{id_prefix}{i:06d}",
                instruction=instr,
                input=str(row.get(fmap["input"]) or ""),
                output=str(row.get(fmap["output"]) or ""),
                label=None if row.get(fmap["label"]) is None else str(row[fmap["label"]]),
                source=str(row.get("source") or where),
                category=row.get(fmap["category"]),
                system=row.get(fmap["system"]),
            )
        )
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json (list, or {"data"|"train": list}) or .csv file; errors name file and line."""
    p = Path(path)
    if not p.is_file():
        raise BnrError(f"data file {str(p)!r} not found; fix the dataset path")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BnrError(f"{p}:{lineno}: malformed JSON line ({e.msg}); fix or remove that line") from None
        return rows
    if suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise BnrError(f"{p}:{e.lineno}: malformed JSON ({e.msg})") from None
        if isinstance(data, dict):
            for key in ("data", "train", "rows", "instances"):
                if isinstance(data.get(key), list):
                    return list(data[key])
            raise BnrError(f"{p}: JSON object has no list under data/train/rows; give a list of records")
        if not isinstance(data, list):
            raise BnrError(f"{p}: expected a JSON list of records")
        return data
    if suffix in (".csv", ".tsv"):
        with open(p, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    raise BnrError(f"{p}: unsupported data file type {suffix!r}; use .jsonl, .json or .csv")


def load_file(path: str | Path, *, fields: dict[str, str] | None = None, require_output: bool = True) -> list[Record]:
    rows = read_rows(path)
    records = records_from_rows(rows, where=str(path), fields=fields, require_output=require_output)
    if not records:
        raise BnrError(f"dataset {str(path)!r} is empty; give a file with at least one record")
    return records


def write_jsonl(path: str | Path, records: list[Record]) -> None:
    from bnr.artifacts import atomic_write_text

    atomic_write_text(Path(path), "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records))
