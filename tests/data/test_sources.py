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


def test_where_keeps_rows_whose_fields_are_listed(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    rows = [("a", "refusal", "x"), ("b", "safe_response", "x"), ("c", "refusal", "y")]
    f.write_text(
        "".join(
            json.dumps({"id": i, "instruction": i, "output": "o", "label": lab, "source": src}) + "\n"
            for i, lab, src in rows
        )
    )
    keep = load_records(DataConfig(path=str(f), where={"label": ["refusal"]}))
    assert [r.id for r in keep] == ["a", "c"]
    both = load_records(DataConfig(path=str(f), where={"label": ["refusal"], "source": ["y"]}, limit=5))
    assert [r.id for r in both] == ["c"]
    with pytest.raises(BnrError, match="empty after filtering"):
        load_records(DataConfig(path=str(f), where={"source": ["z"]}))
    with pytest.raises(BnrError, match=r"data\.where names 'colour'"):
        load_records(DataConfig(path=str(f), where={"colour": ["red"]}))


def test_skip_per_source_is_exactly_what_an_evaluation_slice_leaves(tmp_path: Path) -> None:
    from bnr.eval.safety import first_per_source

    f = tmp_path / "d.jsonl"
    rows = [(f"{src}{i}", src) for i in range(4) for src in ("a", "b", "c")][:-2]  # c has 3 rows, b 3, a 4
    f.write_text("".join(json.dumps({"id": i, "instruction": i, "output": "", "source": s}) + "\n" for i, s in rows))
    every = load_records(DataConfig(path=str(f)), require_output=False)
    rest = load_records(DataConfig(path=str(f), skip_per_source=2), require_output=False)
    sliced = first_per_source(every, 2)  # what `per_source_limit=2` evaluates
    assert {r.id for r in rest}.isdisjoint(r.id for r in sliced)
    assert sorted(r.id for r in rest + sliced) == sorted(r.id for r in every)
    assert [r.id for r in rest] == ["a2", "b2", "c2", "a3"]  # file order kept
    assert [r.id for r in load_records(DataConfig(path=str(f), skip_per_source=2, limit=2), require_output=False)] == [
        "a2",
        "b2",
    ]
    with pytest.raises(BnrError, match="skip_per_source must be >= 0"):
        load_records(DataConfig(path=str(f), skip_per_source=-1), require_output=False)
    with pytest.raises(BnrError, match="empty after filtering"):
        load_records(DataConfig(path=str(f), skip_per_source=4), require_output=False)


def test_hub_source_reads_a_local_dataset_folder_with_datasets(tmp_path: Path) -> None:
    """A folder shaped like a hub repo goes through the real `datasets.load_dataset` (offline)."""
    import datasets

    repo = tmp_path / "org-name"
    (repo / "data").mkdir(parents=True)
    rows = [{"question": f"q{i}", "answer": f"a{i}", "topic": "t"} for i in range(3)]
    datasets.Dataset.from_list(rows).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(rows[:1]).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    fields = {"instruction": "question", "output": "answer", "category": "topic"}
    recs = load_records(DataConfig(source="hub", path=str(repo), fields=fields))
    assert [(r.instruction, r.output, r.category) for r in recs] == [(f"q{i}", f"a{i}", "t") for i in range(3)]
    assert recs[2].origin == f"{repo} [train] row 3"
    assert len(load_records(DataConfig(source="hub", path=str(repo), split="test", fields=fields))) == 1
    with pytest.raises(BnrError, match=r"fields\.output='response' names a column the data does not have"):
        load_records(DataConfig(source="hub", path=str(repo), fields={**fields, "output": "response"}))


def test_hub_source_passes_id_subset_and_split_to_load_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    calls = []

    def fake_load_dataset(path: str, name: str | None = None, split: str | None = None) -> datasets.Dataset:
        calls.append((path, name, split))
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        row = {"question": "1+1?", "answer": "2\n#### 2"} if path == "org/gsm" else {"conversation": msgs}
        return datasets.Dataset.from_list([row])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = DataConfig(source="hub", path="org/chat", subset="en", split="dev", fields={"messages": "conversation"})
    rec = load_records(cfg)[0]
    assert calls == [("org/chat", "en", "dev")] and (rec.instruction, rec.output) == ("hi", "hello")
    load_records(DataConfig(source="gsm8k", path="org/gsm", subset="socratic"))  # named sources take subset too
    assert calls[-1] == ("org/gsm", "socratic", "train")


def test_hub_source_errors(tmp_path: Path) -> None:
    with pytest.raises(BnrError, match="source 'hub' needs path=<org/name>"):
        load_records(DataConfig(source="hub"))
    with pytest.raises(BnrError, match="cannot load dataset 'no-such-org/no-such-set' split 'train'"):
        load_records(DataConfig(source="hub", path="no-such-org/no-such-set"))


def test_named_sources_with_fixed_columns_reject_fields(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    with pytest.raises(BnrError, match=r"source 'gsm8k' maps its own columns, fields\.input= does not apply"):
        load_records(DataConfig(source="gsm8k", path=path, fields={"input": "question"}))


def test_named_sources_read_save_to_disk_folders(tmp_path: Path) -> None:
    import datasets

    rows = [{"prompt": "q", "rejected": "harm", "chosen": "no"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "lat"))
    assert load_records(DataConfig(source="lat-refusal", path=str(tmp_path / "lat")))[0].output == "no"
