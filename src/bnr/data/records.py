"""The field's instruction / input / output record, from canonical, chat (`messages`) or prompt/completion rows."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnr.data.chat import Turn, parse_conversation, parse_turns
from bnr.data.files import read_rows
from bnr.errors import BnrError

CANONICAL = ("instruction", "input", "output")
# names `fields.<name>=<column>` may remap
FIELD_NAMES = ("id", "instruction", "input", "output", "label", "category", "system", "history", "messages")


@dataclass(frozen=True)
class Record:
    """One sample: `instruction` (+ optional `input`) -> `output`. `id` is unique within its source.

    Chat data adds an optional `system` turn and the `history` of earlier turns, as (role, text) pairs;
    the templates render both. `origin` says where the record was read (`file:line`) for error messages.
    """

    id: str
    instruction: str
    input: str = ""
    output: str = ""
    label: str | None = None
    source: str = ""
    category: str | None = None
    system: str | None = None
    history: tuple[Turn, ...] = ()
    origin: str = field(default="", compare=False)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def with_output(self, output: str) -> Record:
        return dataclasses.replace(self, output=output)

    def digest(self) -> str:
        """Content hash (instruction, input, output, and the system turn and history when present)."""
        parts = [self.instruction, self.input, self.output]
        if self.system is not None or self.history:
            parts += [self.system or "", json.dumps(self.history)]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("origin")
        for key in ("meta", "history"):
            if not d[key]:
                d.pop(key)
        return d


def _text(row: dict[str, Any], key: str, where: str) -> str | None:
    """The row's text under `key` (None if absent or null); a number or other non-text value is an error."""
    value = row.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BnrError(
        f"{where}: {key!r} is {type(value).__name__} {json.dumps(value)[:40]}, not text; "
        f"write it as a string or map another column with fields.<name>=<column>"
    )


def _history(value: Any, where: str) -> tuple[Turn, ...]:
    """A canonical row's `history`: a list of {role, content} messages or [role, text] pairs."""
    if value is None:
        return ()
    if isinstance(value, list) and all(isinstance(t, list | tuple) and len(t) == 2 for t in value):
        value = [{"role": r, "content": c} for r, c in value]
    return tuple(parse_turns(value, f"{where}: 'history'"))


def _check_mapping(rows: list[Any], where: str, fields: dict[str, str]) -> None:
    unknown = sorted(set(fields) - set(FIELD_NAMES))
    if unknown:
        raise BnrError(
            f"{where}: unknown field(s) {', '.join(f'fields.{k}' for k in unknown)}; "
            f"fields can map: {', '.join(FIELD_NAMES)}"
        )
    columns = set().union(*(r for r in rows if isinstance(r, dict)))
    for name, column in fields.items():
        if column not in columns:
            raise BnrError(
                f"{where}: fields.{name}={column!r} names a column the data does not have "
                f"(columns: {', '.join(sorted(columns))}); fix the mapping"
            )


def _row_kind(row: dict[str, Any], fmap: dict[str, str], fields: dict[str, str]) -> str:
    """`chat` (messages), `completion` (prompt/completion) or `canonical` (instruction/input/output)."""
    if fmap["messages"] in row:
        return "chat"
    if "instruction" not in fields and fmap["instruction"] not in row and "prompt" in row:
        return "completion"
    return "canonical"


def _parts(row: dict[str, Any], kind: str, fmap: dict[str, str], where: str) -> dict[str, Any]:
    """instruction/output/system/history/input of one row of the given kind."""
    key = {"chat": fmap["messages"], "completion": "prompt"}.get(kind)
    if key is not None and key not in row:
        raise BnrError(f"{where}: has no {key!r} (the first row has); give every row the same shape")
    if kind == "chat":
        return dataclasses.asdict(parse_conversation(row[fmap["messages"]], where))
    if kind == "completion" and (isinstance(row["prompt"], list) or isinstance(row.get("completion"), list)):
        messages = [*_as_messages(row["prompt"], "user"), *_as_messages(row.get("completion"), "assistant")]
        return dataclasses.asdict(parse_conversation(messages, where))
    if kind == "completion":
        return {"instruction": _text(row, "prompt", where), "output": _text(row, "completion", where)}
    if fmap["instruction"] not in row:
        raise BnrError(
            f"{where}: has no field {fmap['instruction']!r} (has: {', '.join(sorted(row))}); map it with "
            "fields.instruction=<column>, or give chat 'messages' or 'prompt'/'completion' rows"
        )
    return {
        "instruction": _text(row, fmap["instruction"], where),
        "input": _text(row, fmap["input"], where) or "",
        "output": _text(row, fmap["output"], where),
        "system": _text(row, fmap["system"], where),
        "history": _history(row.get(fmap["history"]), where),
    }


def _as_messages(value: Any, role: str) -> list[Any]:
    """A prompt or completion of a prompt/completion row as messages (a bare string is one `role` turn)."""
    if value is None:
        return []
    return value if isinstance(value, list) else [{"role": role, "content": value}]


def records_from_rows(
    rows: list[Any],
    *,
    where: str,
    fields: dict[str, str] | None = None,
    require_output: bool = True,
    id_prefix: str = "",
    origins: list[str] | None = None,
) -> list[Record]:
    """Map raw rows to records. `fields` maps record names to the data's columns (e.g. {"output": "response"}).

    Rows may be canonical (instruction/input/output), chat (`messages`) or prompt/completion, told apart by
    the first row. `origins` names each row's place for errors (default `<where> row N`).
    """
    fields = dict(fields or {})
    fmap = {k: fields.get(k, k) for k in FIELD_NAMES}
    _check_mapping(rows, where, fields)
    kind = _row_kind(rows[0], fmap, fields) if rows and isinstance(rows[0], dict) else "canonical"
    out: list[Record] = []
    for i, row in enumerate(rows):
        at = origins[i] if origins else f"{where} row {i + 1}"
        if not isinstance(row, dict):
            raise BnrError(f"{at}: is not an object; give one JSON object per record")
        parts = _parts(row, kind, fmap, at)
        if not parts["instruction"] or not parts["instruction"].strip():
            raise BnrError(f"{at}: has an empty prompt ({fmap['instruction']!r}); give every record an instruction")
        rid = row.get(fmap["id"])
        label = row.get(fmap["label"])
        out.append(
            Record(
                id=str(rid) if rid is not None else f"{id_prefix}{i:06d}",
                instruction=parts["instruction"],
                input=parts.get("input", ""),
                output=parts["output"] or "",
                label=None if label is None else str(label),
                source=str(row.get("source") or where),
                category=row.get(fmap["category"]),
                system=parts.get("system"),
                history=parts.get("history", ()),
                origin=at,
            )
        )
    if require_output:
        check_outputs(out)
    return out


def check_outputs(records: list[Record]) -> None:
    """Training data needs a target for every record: the first one without names its file and line."""
    for r in records:
        if not r.output:
            raise BnrError(
                f"{r.origin or r.id}: record has no output to train on; give it an 'output' (or a 'completion', "
                "or end its 'messages' with the assistant's answer), or map a column with fields.output=<column>"
            )


def load_file(
    path: str | Path | Any,
    *,
    fields: dict[str, str] | None = None,
    require_output: bool = True,
    split: str | None = None,
) -> list[Record]:
    """Records of a local data file or `save_to_disk` folder (see `bnr.data.files.read_rows`), or of data already
    in memory: a `datasets.Dataset` (or a `DatasetDict` with `split`), a list of rows (dicts) or of `Record`s."""
    if not isinstance(path, str | Path):
        return records_from_data(path, fields=fields, require_output=require_output, split=split)
    rows, origins = read_rows(path, split=split)
    records = records_from_rows(rows, where=str(path), fields=fields, require_output=require_output, origins=origins)
    if not records:
        raise BnrError(f"dataset {str(path)!r} is empty; give a file with at least one record")
    return records


def records_from_data(
    data: Any, *, fields: dict[str, str] | None = None, require_output: bool = True, split: str | None = None
) -> list[Record]:
    """Records of in-memory data: a list of `Record`s (as is), a list of rows, or a `datasets` Dataset / DatasetDict
    (rows of `split`, or of its only split), mapped like a file's rows (canonical, chat or prompt/completion)."""
    if isinstance(data, list) and data and all(isinstance(r, Record) for r in data):
        records: list[Record] = list(data)
        if require_output:
            check_outputs(records)
        return records
    if hasattr(data, "keys") and hasattr(data, "values") and not isinstance(data, list):  # a DatasetDict
        names = list(data.keys())
        if split is None and len(names) == 1:
            split = names[0]
        if split not in data:
            raise BnrError(f"choose a split of the DatasetDict with split=<name>; it has: {', '.join(names)}")
        data = data[split]
    if not isinstance(data, list) and not hasattr(data, "column_names"):
        raise BnrError(
            f"cannot read records from a {type(data).__name__}; give a file path, a datasets.Dataset, "
            "a list of rows (dicts) or a list of bnr Records"
        )
    where = "rows" if isinstance(data, list) else f"dataset ({len(data)} rows)"
    rows = [dict(r) if not isinstance(r, dict) and hasattr(r, "keys") else r for r in data]
    if not rows:
        raise BnrError(f"{where} is empty; give at least one record")
    return records_from_rows(rows, where=where, fields=fields, require_output=require_output)


def write_jsonl(path: str | Path, records: list[Record]) -> None:
    from bnr.artifacts import atomic_write_text

    atomic_write_text(Path(path), "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records))
