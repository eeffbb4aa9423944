"""Reading a local data file or folder into raw rows, each with the place it came from (`file:line`, `file row N`).

Text formats (.jsonl, .json, .csv, .tsv) are read here so that errors can name the line; parquet files and
folders written by `datasets.save_to_disk` are read by `datasets`. Text must be UTF-8 (a BOM is fine); any
other encoding, or a binary file, is one error that says what was found and how to convert it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from bnr.errors import BnrError

TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
SUFFIXES = (*TEXT_SUFFIXES, ".parquet")
# magic numbers of binary formats people point a data path at by mistake
MAGIC = {
    b"PAR1": "a parquet file",
    b"PK\x03\x04": "a zip archive",
    b"\x1f\x8b": "a gzip archive",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
    b"SQLite format 3": "an SQLite database",
    b"\x80\x02": "a pickle",
    b"\x80\x04": "a pickle",
}
Rows = tuple[list[Any], list[str]]


def _what_binary(raw: bytes) -> str | None:
    """A description of a binary file, or None if `raw` may be text."""
    for magic, what in MAGIC.items():
        if raw.startswith(magic):
            return what
    head = raw[:8192]
    if b"\x00" not in head:
        return None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None  # UTF-16 with its BOM: text, named by _encoding_of
    odd, even = head[1::2].count(0), head[0::2].count(0)
    if max(odd, even) > len(head) // 4 and min(odd, even) == 0:
        return None  # UTF-16 without a BOM (every other byte NUL)
    return "binary data"


def _encoding_of(raw: bytes) -> tuple[str, str]:
    """(human name, iconv name) of a non-UTF-8 text encoding, by BOM and byte pattern."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\x00\x00\xfe\xff", "UTF-32BE")):
        if raw.startswith(bom):
            return name, name
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16", "UTF-16"
    head = raw[:8192]
    if head[1::2].count(0) > len(head) // 4:
        return "UTF-16 (little-endian, no BOM)", "UTF-16LE"
    if head[0::2].count(0) > len(head) // 4:
        return "UTF-16 (big-endian, no BOM)", "UTF-16BE"
    return "Latin-1 / Windows-1252 (8-bit)", "latin1"


def read_text(path: Path) -> str:
    """The file's text: UTF-8 with or without a BOM; anything else is an error saying how to convert it."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise BnrError(f"cannot read data file {str(path)!r} ({why}); check the path and its permissions") from None
    binary = _what_binary(raw)
    if binary:
        raise BnrError(
            f"{path}: is {binary}, not a text {path.suffix} file; give a UTF-8 .jsonl/.json/.csv file "
            "(or a .parquet file / a datasets.save_to_disk folder)"
        )
    try:
        text = raw.decode("utf-8-sig")
        if "\x00" not in text:
            return text
        start = raw.index(b"\x00")  # UTF-16 text of ASCII characters decodes as UTF-8 full of NULs
    except UnicodeDecodeError as e:
        start = e.start
    name, iconv = _encoding_of(raw)
    line = raw[:start].count(b"\n") + 1
    raise BnrError(
        f"{path}:{line}: not UTF-8 (byte 0x{raw[start]:02x}; it looks like {name}); "
        f"convert it with: iconv -f {iconv} -t utf-8 {path} > {path.with_suffix('.utf8' + path.suffix)}"
    )


def _jsonl(path: Path, text: str) -> Rows:
    rows, where = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise BnrError(f"{path}:{lineno}: malformed JSON line ({e.msg}); fix or remove that line") from None
        where.append(f"{path}:{lineno}")
    return rows, where


def _json(path: Path, text: str) -> Rows:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BnrError(f"{path}:{e.lineno}: malformed JSON ({e.msg}); fix the file") from None
    if isinstance(data, dict):
        key = next((k for k in ("data", "train", "rows", "instances") if isinstance(data.get(k), list)), None)
        if key is None:
            raise BnrError(f"{path}: JSON object has no list under data/train/rows; give a list of records")
        data = data[key]
    if not isinstance(data, list):
        raise BnrError(f"{path}: expected a JSON list of records")
    return data, [f"{path} record {i + 1}" for i in range(len(data))]


def _csv(path: Path, text: str) -> Rows:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    rows, where = [], []
    for row in reader:
        rows.append(row)
        where.append(f"{path}:{reader.line_num}")
    return rows, where


def _dataset_rows(ds: Any, where: str) -> Rows:
    rows = [dict(r) for r in ds]
    return rows, [f"{where} row {i + 1}" for i in range(len(rows))]


def is_saved_dataset(path: Path) -> bool:
    """A folder written by `datasets` `save_to_disk` (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))


def load_saved(path: Path, split: str | None) -> Rows:
    """Rows of a `save_to_disk` folder; a DatasetDict needs `split` unless it holds one split."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise BnrError(f"{path}: not a readable datasets.save_to_disk folder ({e}); save it again") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if split is None and len(names) == 1:
            split = names[0]
        if split not in ds:
            raise BnrError(f"{path}: choose a split with split=<name>; it has: {', '.join(names)}")
        return _dataset_rows(ds[split], f"{path} [{split}]")
    return _dataset_rows(ds, str(path))


def load_parquet(path: Path) -> Rows:
    import datasets

    try:
        ds = datasets.Dataset.from_parquet(str(path))
    except (OSError, ValueError) as e:
        raise BnrError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]}); write it again") from None
    return _dataset_rows(ds, str(path))


def read_rows(path: str | Path, *, split: str | None = None) -> Rows:
    """(rows, where each came from) of a .jsonl, .json (a list, or {"data"|"train": list}), .csv, .tsv or
    .parquet file, or of a `save_to_disk` folder (`split` picks from a DatasetDict)."""
    p = Path(path)
    if p.is_dir():
        if is_saved_dataset(p):
            return load_saved(p, split)
        raise BnrError(
            f"{p}: folder is not a datasets.save_to_disk folder (no state.json or dataset_dict.json); "
            "give a data file, or use source=hub path=<folder> for a folder of data files"
        )
    if not p.exists():
        raise BnrError(f"data file {str(p)!r} not found; fix the dataset path")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return load_parquet(p)
    if suffix not in TEXT_SUFFIXES:
        raise BnrError(
            f"{p}: unsupported data file type {suffix!r}; use {', '.join(SUFFIXES)} or a save_to_disk folder"
        )
    text = read_text(p)
    reader = {".jsonl": _jsonl, ".json": _json}.get(suffix, _csv)
    return reader(p, text)
