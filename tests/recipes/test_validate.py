"""`bnr validate` rejects what the run would reject, with the same one-line error and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.cli import main


def _validate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    rc = main(["validate", "model.name_or_path=/not/loaded", "user.n=10", "user.p=0.2", *argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


@pytest.fixture()
def data(tiny_data: dict[str, Path]) -> list[str]:
    return [f"user.benign_data.path={tiny_data['benign']}", f"user.harmful_data.path={tiny_data['harmful']}"]


def test_valid_config_passes_and_unset_provider_stages_are_reported(
    data: list[str], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", f"model.name_or_path={tiny_model_dir}", "user.n=10", "user.p=0.2", *data]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out and "buffer.data" in out and "not set" in out
    assert "every lora.target_modules entry found" in out and "0 of 36 user records dropped" in out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name_or_path=/no/such/model", "model folder '/no/such/model' does not exist; fix model.name_or_path"),
        ("user.lora.target_modules=[q_proj,qkv_proj]", "user.lora.target_modules: 'qkv_proj' names no Linear layer"),
        ("max_length=8", "max_length=8 leaves no answer token for any of"),
    ],
)
def test_the_model_is_checked_without_its_weights(
    data: list[str], tiny_model_dir: Path, override: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _validate([f"model.name_or_path={tiny_model_dir}", *data, override], capsys)
    assert rc == 2 and len(err) == 1 and message in err[0], err


def test_file_source_without_a_path(data: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _validate([data[1]], capsys)  # user.benign_data is left unset: finetune would reject it
    assert rc == 2 and err == ["bnr: error: dataset source 'file' needs path=<file>"]
    rc, err = _validate([data[0]], capsys)  # p=0.2 needs harmful data
    assert rc == 2 and err == ["bnr: error: dataset source 'file' needs path=<file>"]


def test_remap_to_a_missing_column(data: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _validate([*data, "user.benign_data.fields.input=context"], capsys)
    assert rc == 2 and len(err) == 1 and "fields.input='context' names a column the data does not have" in err[0]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"instruction": "q", "output": 5}, "bad.jsonl:2: 'output' is int 5, not text"),
        ({"instruction": "q"}, "bad.jsonl:2: record has no output to train on"),
        ({"messages": [{"role": "user", "content": "q"}]}, "bad.jsonl:2: record has no output to train on"),
    ],
)
def test_bad_outputs_are_caught_before_any_run(
    tmp_path: Path, data: list[str], capsys: pytest.CaptureFixture[str], row: dict, error: str
) -> None:
    good = (
        {"instruction": "a", "output": "b"}
        if "messages" not in row
        else {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    rc, err = _validate([data[0], f"user.harmful_data.path={bad}"], capsys)
    assert rc == 2 and len(err) == 1 and error in err[0]


def test_non_utf8_data_file_is_one_line(tmp_path: Path, data: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(
        (json.dumps({"instruction": "caf\u00e9", "output": "b"}, ensure_ascii=False) + "\n").encode("latin-1")
    )
    rc, err = _validate([data[0], f"user.harmful_data.path={bad}"], capsys)
    assert rc == 2 and len(err) == 1 and "not UTF-8" in err[0] and "iconv -f latin1 -t utf-8" in err[0]
