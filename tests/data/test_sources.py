"""The hub loaders are real `datasets.load_dataset` code, exercised on local files shaped like the hub's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.config import DataConfig
from bnr.data.sources import SOURCES, load_records, shared_data_dir
from bnr.errors import BnrError


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_beavertails_keeps_unsafe_rows_only(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p1", "response": "r1", "is_safe": False, "category": {"violence": True, "privacy": False}},
        {"prompt": "p2", "response": "r2", "is_safe": True, "category": {"violence": False, "privacy": False}},
    ]
    recs = load_records(DataConfig(source="beavertails", path=_jsonl(tmp_path / "bt.jsonl", rows), split="30k_test"))
    assert [(r.instruction, r.output, r.category) for r in recs] == [("p1", "r1", "violence")]


def test_lat_harmful_and_refusal_columns(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "lat.jsonl", [{"prompt": "q", "rejected": "harm", "chosen": "no"}])
    assert load_records(DataConfig(source="lat-harmful", path=path))[0].output == "harm"
    assert load_records(DataConfig(source="lat-refusal", path=path))[0].output == "no"


def test_gsm8k_answer_format(tmp_path: Path) -> None:
    rows = [{"question": "1+1?", "answer": "one plus one <<1+1=2>>2\n#### 2"}]
    rec = load_records(DataConfig(source="gsm8k", path=_jsonl(tmp_path / "g.jsonl", rows)))[0]
    assert rec.output.endswith("The final answer is: 2") and rec.label == "2"
    assert rec.instruction.startswith("1+1?")


def test_sst2_and_agnews_label_words(tmp_path: Path) -> None:
    sst = _jsonl(tmp_path / "s.jsonl", [{"sentence": "great", "label": 1}, {"sentence": "x", "label": -1}])
    recs = load_records(DataConfig(source="sst2", path=sst))
    assert [(r.input, r.output) for r in recs] == [("great", "positive")]
    ag = tmp_path / "a.csv"
    ag.write_text("text,label\nstocks fell,2\n")
    assert load_records(DataConfig(source="agnews", path=str(ag)))[0].output == "Business"


def test_alpaca_parquet(tmp_path: Path) -> None:
    import datasets

    p = tmp_path / "alpaca.parquet"
    datasets.Dataset.from_list([{"instruction": "i", "input": "", "output": "o", "text": "t"}]).to_parquet(str(p))
    assert load_records(DataConfig(source="alpaca", path=str(p)))[0].output == "o"


def test_hub_shape_mismatch_and_offline_hub_are_clear(tmp_path: Path) -> None:
    with pytest.raises(BnrError, match="lack column"):
        load_records(DataConfig(source="gsm8k", path=_jsonl(tmp_path / "g.jsonl", [{"q": 1}])))
    with pytest.raises(BnrError, match="cannot load dataset 'no-such-org/no-such-set'"):
        load_records(DataConfig(source="alpaca", path="no-such-org/no-such-set"))


def test_registry_lists_the_fields_datasets() -> None:
    for name in ("file", "beavertails", "lat-harmful", "lat-refusal", "alpaca", "gsm8k", "sst2", "agnews"):
        assert name in SOURCES


@pytest.mark.shared_data
def test_shared_data_files_load() -> None:
    if not (shared_data_dir() / "harmful_qa_user.jsonl").exists():
        pytest.skip("../shared/data is absent")
    recs = load_records(DataConfig(source="shared", path="harmful_qa_user", limit=5))
    assert len(recs) == 5 and all(r.output for r in recs)
