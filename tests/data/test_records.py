from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bnr.config import DataConfig
from bnr.data.records import Record, load_file, write_jsonl
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


@pytest.mark.parametrize("output", [5, 1.5, True, ["a"], {"text": "a"}])
def test_non_text_output_is_an_error_naming_file_and_line(tmp_path: Path, output: object) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(
        json.dumps({"instruction": "q", "output": "fine"})
        + "\n"
        + json.dumps({"instruction": "q", "output": output})
        + "\n"
    )
    with pytest.raises(BnrError, match=rf"d\.jsonl:2: 'output' is {type(output).__name__} .*not text"):
        load_records(DataConfig(path=str(p)))
    with pytest.raises(BnrError, match=r"d\.jsonl:2: 'output' is"):  # even where outputs are optional
        load_records(DataConfig(path=str(p)), require_output=False)


@pytest.mark.parametrize(
    "row", [{"instruction": "q"}, {"instruction": "q", "output": None}, {"instruction": "q", "output": ""}]
)
def test_missing_output_is_an_error_at_load_naming_file_and_line(tmp_path: Path, row: dict) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(BnrError, match=r"d\.jsonl:2: record has no output to train on"):
        load_records(DataConfig(path=str(p)))
    assert len(load_records(DataConfig(path=str(p)), require_output=False)) == 2  # a prompt set needs none


def test_remap_to_a_missing_column_or_an_unknown_field_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"q": "a", "a": "b", "ctx": "c"}) + "\n")
    base = {"instruction": "q", "output": "a"}
    assert load_records(DataConfig(path=str(p), fields={**base, "input": "ctx"}))[0].input == "c"
    with pytest.raises(
        BnrError, match=r"fields\.input='context' names a column the data does not have \(columns: a, ctx, q\)"
    ):
        load_records(DataConfig(path=str(p), fields={**base, "input": "context"}))
    with pytest.raises(BnrError, match=r"unknown field\(s\) fields\.answer; fields can map: id, instruction"):
        load_records(DataConfig(path=str(p), fields={**base, "answer": "a"}))


def test_non_text_input_and_empty_instruction_are_errors(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("instruction,output\na,b\n ,c\n")
    with pytest.raises(BnrError, match=r"d\.csv:3: has an empty prompt"):
        load_file(p)
    j = tmp_path / "d.json"
    j.write_text(json.dumps([{"instruction": "a", "input": 7, "output": "b"}]))
    with pytest.raises(BnrError, match=r"d\.json record 1: 'input' is int 7, not text"):
        load_file(j)


def test_prompt_completion_rows_standard_and_conversational(tmp_path: Path) -> None:
    p = tmp_path / "pc.jsonl"
    rows = [
        {"prompt": "2+2?", "completion": "4"},
        {
            "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": "hello"}],
        },
        {"prompt": [{"role": "user", "content": "mixed"}], "completion": "shapes"},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second, third = load_file(p)
    assert (third.instruction, third.output) == ("mixed", "shapes")
    assert (first.instruction, first.output, first.system) == ("2+2?", "4", None)
    assert (second.instruction, second.output, second.system) == ("hi", "hello", "s")
    p.write_text(json.dumps({"prompt": "only a prompt"}) + "\n")
    with pytest.raises(BnrError, match=r"pc\.jsonl:1: record has no output.*'completion'"):
        load_file(p)


def test_plain_records_keep_their_digest_and_chat_records_hash_their_context() -> None:
    plain = Record(id="a", instruction="q", input="i", output="o")
    assert plain.digest() == hashlib.sha256(b"q\x1fi\x1fo").hexdigest()[:12]  # manifests stay comparable
    with_system = Record(id="a", instruction="q", input="i", output="o", system="s")
    with_history = Record(id="a", instruction="q", input="i", output="o", history=(("user", "u"),))
    assert len({plain.digest(), with_system.digest(), with_history.digest()}) == 3


def test_chat_records_round_trip_through_write_jsonl(tmp_path: Path) -> None:
    rec = Record(
        id="a", instruction="q", output="o", source="s", system="s", history=(("user", "u"), ("assistant", "v"))
    )
    write_jsonl(tmp_path / "out.jsonl", [rec, Record(id="b", instruction="q2", output="o2")])
    back = load_file(tmp_path / "out.jsonl")
    assert back[0] == rec and back[0].digest() == rec.digest()
    assert "history" not in json.loads((tmp_path / "out.jsonl").read_text().splitlines()[1])
