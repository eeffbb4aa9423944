"""Issue 21 section 7 (the part outside the guard): YAML and Literal errors say where and what is valid,
`max_new_tokens=0` is refused, a JSON-list adapter config is one line in eval, `overwrite=true` never deletes a
folder bnr did not write, and `config_hash` does not depend on `out`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from reliability_runs import cli

from bnr.cli import main
from bnr.config import load_config
from bnr.runs.opening import config_hash


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("model:\n  dtype: auto\n  name_or_path: [unclosed\nseed: 3\n", "(line 3, column 17)"),
        ("seed: 1\n\tuser: 2\n", "(line 2, column 1)"),
        ("user:\n  n: 1\n n: 2\n", "(line 3, column 2)"),
    ],
)
def test_yaml_errors_keep_line_and_column(
    text: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    rc, line = cli(["validate", "-c", str(bad)], capsys)
    assert rc == 2 and "is not valid YAML" in line and where in line, line


@pytest.mark.parametrize(
    ("override", "valid"),
    [
        ("model.dtype=float8", "valid: auto, float32, bfloat16, float16"),
        ("buffer.train.schedule=cos", "valid: cosine, linear, constant"),
        ("eval.backend=tgi", "valid: hf, vllm"),
    ],
)
def test_literal_errors_list_the_valid_values(override: str, valid: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, line = cli(["validate", override], capsys)
    key, value = override.split("=")
    assert rc == 2 and f"{key!r} is {value!r}" in line and valid in line, line


@pytest.mark.parametrize("override", ["eval.max_new_tokens=0", "eval.max_new_tokens=-3"])
def test_max_new_tokens_below_one_is_refused(override: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, line = cli(["validate", override], capsys)
    assert rc == 2 and "eval.max_new_tokens must be >= 1" in line, line


def test_max_new_tokens_zero_in_benchmark_options_is_refused() -> None:
    from bnr.errors import BnrError
    from bnr.eval.benchmarks import make_benchmark

    with pytest.raises(BnrError, match="max_new_tokens must be >= 1"):
        make_benchmark("harmful", max_new_tokens=0)


def test_eval_of_an_adapter_whose_config_is_a_json_list_is_one_line(
    stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = tmp_path / "a"
    shutil.copytree(stage_runs["user"], adapter)
    (adapter / "manifest.json").unlink()  # a plain PEFT folder: its base comes from adapter_config.json
    (adapter / "adapter_config.json").write_text(json.dumps([{"r": 4}]))
    rc, line = cli(["eval", f"target={adapter}", "benchmarks=harmful", f"out={tmp_path / 'e'}"], capsys)
    assert rc == 2 and "adapter_config.json" in line and "not an object" in line, line


@pytest.mark.parametrize("content", ["notes.txt", "manifest.json"])
def test_overwrite_never_deletes_a_folder_bnr_did_not_write(
    content: str, stage_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder of the user's (even one with a manifest.json of its own) is refused with overwrite=true too."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / content).write_text('{"status": "complete"}' if content == "manifest.json" else "my notes")
    argv = ["merge", f"user={stage_runs['user']}", f"reinforce={stage_runs['reinforce']}", f"out={mine}"]
    rc, line = cli([*argv, "overwrite=true"], capsys)
    assert rc == 2 and "not a bnr run" in line and "never deletes it" in line, line
    assert sorted(p.name for p in mine.iterdir()) == [content]
    assert not Path(f"{mine}.partial").exists()
    # a bnr run in the same place is replaced as before
    shutil.rmtree(mine)
    assert main(argv) == 0 and main([*argv, "overwrite=true"]) == 0


def test_config_hash_does_not_depend_on_where_outputs_go() -> None:
    a = load_config("toy", ["out=/a", "buffer.out=/a/buffer", "sweep.out=/x"])
    b = load_config("toy", ["out=/b", "buffer.out=/elsewhere"])
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(load_config("toy", ["out=/a", "seed=7"]))
