"""Section 1: same seed, same result (every training stage bitwise on CPU); resume checks its config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability_runs import cli, interrupted_buffer
from safetensors.torch import load_file

from bnr.artifacts import MANIFEST
from bnr.cli import main


def _stage_argv(stage: str, tiny_over: list[str], out: Path, buffer: Path) -> list[str]:
    return {
        "train-buffer": ["train-buffer", *tiny_over, f"buffer.out={out}"],
        "train-reinforce": ["train-reinforce", *tiny_over, f"reinforce.buffer={buffer}", f"reinforce.out={out}"],
        "finetune-bnr": [
            "finetune",
            *tiny_over,
            "user.defense=bnr-buffer-only",
            f"user.buffer={buffer}",
            f"user.out={out}",
            "user.lora.dropout=0.1",
        ],
        "finetune-sft": ["finetune", *tiny_over, "user.defense=none", f"user.out={out}", "user.lora.dropout=0.1"],
        "align": [
            "align",
            *tiny_over,
            f"align.out={out}",
            "align.train.epochs=1",
            "align.train.progress=false",
            "align.lora.r=4",
        ],
        "train-safety": [
            "train-safety",
            *tiny_over,
            f"analyze.safety.out={out}",
            "analyze.safety.train.epochs=1",
            "analyze.safety.train.progress=false",
            "analyze.safety.lora.r=4",
        ],
    }[stage]


def _weights(run: Path) -> dict[str, object]:
    files = sorted(run.glob("*.safetensors"))
    assert files, f"no weights in {run}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


@pytest.mark.parametrize(
    "stage", ["train-buffer", "train-reinforce", "finetune-bnr", "finetune-sft", "align", "train-safety"]
)
def test_two_identical_runs_are_bitwise_equal(
    stage: str, tiny_over: list[str], tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    buffer = tmp_path / "buffer"
    assert main(["train-buffer", *tiny_over, f"buffer.out={buffer}"]) == 0
    extra = [f"align.refusal_data.path={tiny_data['refusal']}", f"align.benign_data.path={tiny_data['benign']}"]
    extra += [f"analyze.safety.data.path={tiny_data['refusal']}"]
    stage_runs = []
    for k in ("a", "b"):
        argv = _stage_argv(stage, [*tiny_over, *extra], tmp_path / k, buffer)
        assert main(argv) == 0
        stage_runs.append(_weights(tmp_path / k))
    a, b = stage_runs
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a), "same seed gave different weights"  # type: ignore[attr-defined]


def test_resume_refuses_another_config_naming_the_keys(
    tiny_over: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = interrupted_buffer(tiny_over, tmp_path / "b", monkeypatch)
    rc, line = cli([*argv, "resume=true", "buffer.train.lr=1e-4", "buffer.lora.r=8"], capsys)
    assert rc == 2 and "cannot resume" in line
    assert "buffer.train.lr" in line and "buffer.lora.r" in line and "buffer.n" not in line
    assert not (tmp_path / "b").exists()
    # progress and logging knobs may change; the run then resumes and completes
    assert main([*argv, "resume=true", "buffer.train.progress=false"]) == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["training"]["resumed_from"] == 8


def test_metrics_never_repeat_a_step_after_resume(
    tiny_over: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = interrupted_buffer(tiny_over, tmp_path / "b", monkeypatch)
    assert main([*argv, "resume=true"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))


def test_resume_of_a_checkpoint_without_recorded_config_is_refused(
    tiny_over: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = interrupted_buffer(tiny_over, tmp_path / "b", monkeypatch)
    (Path(f"{tmp_path / 'b'}.partial") / MANIFEST).unlink()  # where the checkpoint's stage key is recorded
    rc, line = cli([*argv, "resume=true"], capsys)
    assert rc == 2 and "does not record the stage key" in line
