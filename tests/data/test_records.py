from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.config import DataConfig
from bnr.data.records import load_file, write_jsonl
from bnr.data.sources import load_records
from bnr.errors import BnrError


def test_jsonl_json_csv_load_the_same_records(tmp_path: Path) -> None:
    rows = [{"instruction": "a", "input": "", "output": "x"}, {"instruction": "b", "input": "ctx", "output": "y"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.csv").write_text("instruction,input,output\na,,x\nb,ctx,y\n")
    loaded = [load_file(tmp_path / f"d.{ext}") for ext in ("jsonl", "json", "csv")]
    for recs in loaded:
        assert [(r.instruction, r.input, r.output) for r in recs] == [("a", "", "x"), ("b", "ctx", "y")]


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    with pytest.raises(BnrError, match=r"bad\.jsonl:2: malformed JSON line"):
        load_file(p)


def test_missing_field_is_named_with_the_fix(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n')
    with pytest.raises(BnrError, match=r"d\.jsonl:1: record has no output.*fields\.output="):
        load_file(p)
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "a", "response": "b"}\n')
    with pytest.raises(BnrError, match=r"q\.jsonl:1: has no field 'instruction'.*fields\.instruction="):
        load_file(q)
    recs = load_records(DataConfig(path=str(p), fields={"instruction": "prompt", "output": "response"}))
    assert (recs[0].instruction, recs[0].output) == ("a", "b")


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "empty.jsonl"
    p.write_text("\n")
    with pytest.raises(BnrError, match="is empty"):
        load_file(p)


def test_missing_file_and_limit(tmp_path: Path) -> None:
    with pytest.raises(BnrError, match="not found"):
        load_records(DataConfig(path=str(tmp_path / "nope.jsonl")))
    p = tmp_path / "d.jsonl"
    write_jsonl(p, load_file_rows(tmp_path))
    assert len(load_records(DataConfig(path=str(p), limit=2))) == 2


def load_file_rows(tmp_path: Path) -> list:
    src = tmp_path / "src.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"r{i}", "instruction": f"q{i}", "output": "a"}) + "\n" for i in range(5))
    )
    return load_file(src)


def test_unknown_source_lists_valid_ones() -> None:
    with pytest.raises(BnrError, match=r"unknown dataset 'nope'; valid: .*beavertails"):
        load_records(DataConfig(source="nope"))
