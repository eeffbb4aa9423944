"""Local data files: encodings (UTF-8 with or without BOM; anything else is one clear error), parquet and
`datasets.save_to_disk` folders read by `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.config import DataConfig
from bnr.data.files import read_rows
from bnr.data.records import load_file
from bnr.data.sources import load_records
from bnr.errors import BnrError

ROWS = [
    {"instruction": "caf\u00e9?", "input": "", "output": "cr\u00e8me"},
    {"instruction": "b", "input": "ctx", "output": "y"},
]


def _jsonl_text() -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS)


def _triples(recs: list) -> list[tuple[str, str, str]]:
    return [(r.instruction, r.input, r.output) for r in recs]


@pytest.mark.parametrize("ext", ["jsonl", "json", "csv"])
def test_utf8_bom_is_not_an_error(tmp_path: Path, ext: str) -> None:
    text = {
        "jsonl": _jsonl_text(),
        "json": json.dumps(ROWS, ensure_ascii=False),
        "csv": "instruction,input,output\ncaf\u00e9?,,cr\u00e8me\nb,ctx,y\n",
    }[ext]
    path = tmp_path / f"bom.{ext}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert _triples(load_file(path)) == [("caf\u00e9?", "", "cr\u00e8me"), ("b", "ctx", "y")]


def test_latin1_names_the_encoding_the_line_and_the_iconv_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(_jsonl_text().encode("latin-1"))
    with pytest.raises(BnrError) as e:
        load_file(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}:1: not UTF-8")
    assert "Latin-1" in msg and f"iconv -f latin1 -t utf-8 {path} >" in msg


@pytest.mark.parametrize(("codec", "iconv"), [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16LE")])
def test_utf16_is_named(tmp_path: Path, codec: str, iconv: str) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes("instruction,output\na,b\n".encode(codec))
    with pytest.raises(BnrError, match=rf"not UTF-8 .*UTF-16.*iconv -f {iconv} -t utf-8"):
        load_file(path)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"PAR1\x00\x01\x02", "a parquet file"),
        (b"\x1f\x8b\x08\x00junk", "a gzip archive"),
        (bytes(range(256)), "binary"),
    ],
)
def test_binary_files_say_so(tmp_path: Path, data: bytes, what: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(data)
    with pytest.raises(BnrError, match=rf"data\.jsonl: is {what}.*not a text \.jsonl file"):
        load_file(path)


def test_parquet_file(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    recs = load_records(DataConfig(path=str(path)))
    assert _triples(recs) == [("caf\u00e9?", "", "cr\u00e8me"), ("b", "ctx", "y")]
    assert recs[1].origin == f"{path} row 2"


def test_save_to_disk_dataset_and_dataset_dict(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "one"))
    assert _triples(load_records(DataConfig(path=str(tmp_path / "one"))))[1] == ("b", "ctx", "y")
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_records(DataConfig(path=str(tmp_path / "dict"), split="test"))) == 1
    with pytest.raises(BnrError, match=r"choose a split with split=<name>; it has: train, test"):
        load_records(DataConfig(path=str(tmp_path / "dict")))
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "single"))
    assert len(load_records(DataConfig(path=str(tmp_path / "single")))) == 2  # the only split


def test_folders_and_suffixes_that_are_not_data(tmp_path: Path) -> None:
    with pytest.raises(BnrError, match=r"not a datasets\.save_to_disk folder.*source=hub"):
        read_rows(tmp_path)
    (tmp_path / "d.txt").write_text("hello\n")
    with pytest.raises(BnrError, match=r"unsupported data file type '\.txt'; use \.jsonl, .*\.parquet"):
        read_rows(tmp_path / "d.txt")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(BnrError, match="not a readable parquet file"):
        read_rows(tmp_path / "broken.parquet")


def test_jsonl_origins_count_physical_lines(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text("\n" + json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    rows, origins = read_rows(path)
    assert len(rows) == 2 and origins == [f"{path}:2", f"{path}:4"]
