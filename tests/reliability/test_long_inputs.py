"""Issue 21 section 6: an over-long prompt is cut to the model's context at evaluation (recorded per sample), and
training and `bnr validate` name the file and line of an over-long example."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from bnr.cli import main
from bnr.eval.generate import fit_prompt
from conftest import BENIGN, HARMFUL

LONG = " ".join(["zorp the blick"] * 30_000)  # ~400 KB, 90k tokens for the tiny model (context 512)


def _with_long_record(path: Path, pairs: list[tuple[str, str]], at: int) -> Path:
    rows = [{"id": f"r{i}", "instruction": q, "input": "", "output": a} for i, (q, a) in enumerate(pairs * 4)]
    rows.insert(at, {"id": "long", "instruction": LONG, "input": "", "output": "sure"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fit_prompt_keeps_the_end_and_the_bos() -> None:
    assert fit_prompt([1, 5, 6, 7, 8], 3, bos_id=1) == ([1, 7, 8], 2)
    assert fit_prompt([5, 6, 7, 8], 3, bos_id=1) == ([6, 7, 8], 1)
    assert fit_prompt([5, 6], 3, bos_id=1) == ([5, 6], 0)
    assert fit_prompt([5, 6, 7], None, bos_id=None) == ([5, 6, 7], 0)


def test_eval_cuts_an_over_long_prompt_and_records_it(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _with_long_record(tmp_path / "harmful.jsonl", HARMFUL, at=1)
    argv = ["eval", f"model.name_or_path={tiny_model_dir}", "benchmarks=harmful", "judges=keyword"]
    argv += [f"eval.data.harmful.path={data}", "limit=4", "max_new_tokens=3", "eval.cache=null"]
    argv += ["eval.progress=false", f"out={tmp_path / 'e'}"]
    started = time.time()
    main(argv)  # exit 2: the tiny random model answers nothing (INVALID), which is not what this test is about
    assert time.time() - started < 120
    rows = [json.loads(x) for x in (tmp_path / "e" / "harmful.samples.jsonl").read_text().splitlines()]
    cut = {r["id"]: r["prompt_tokens_dropped"] for r in rows}
    assert cut["long"] > 80_000 and all(v == 0 for k, v in cut.items() if k != "long"), cut


def test_training_names_the_file_and_line_of_an_over_long_example(
    tiny_over: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _with_long_record(tmp_path / "h.jsonl", HARMFUL, at=2)
    with caplog.at_level(logging.WARNING, logger="bnr.data.tokenize"):
        assert main(["train-buffer", *tiny_over, f"buffer.data.path={data}", f"buffer.out={tmp_path / 'b'}"]) == 0
    line = next(r.getMessage() for r in caplog.records if "longer than max_length" in r.getMessage())
    assert f"{data}:3" in line and "dropped" in line, line


def test_validate_names_the_file_and_line_of_an_over_long_example(
    tiny_over: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _with_long_record(tmp_path / "b.jsonl", BENIGN, at=0)
    assert main(["validate", *tiny_over, f"user.benign_data.path={data}"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "longer than max_length" in x)
    assert "user.benign_data" in line and f"{data}:1" in line, line
