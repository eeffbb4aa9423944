"""Experiment trackers: off by default, fed the training records when on, skipped cleanly when not installed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bnr.cli import main
from bnr.trackers import TRACKERS, Trackers
from conftest import tiny_overrides


class _Recorder:
    seen: ClassVar[list[dict[str, Any]]] = []
    closed = 0

    def __init__(self, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        assert config["seed"] == 42 and run_dir.name.endswith(".partial")

    def log(self, record: dict[str, Any]) -> None:
        _Recorder.seen.append(record)

    def close(self) -> None:
        _Recorder.closed += 1


def test_missing_library_is_skipped_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bnr.trackers")
    TRACKERS.add("absent-lib", ("no_such_module_for_bnr", _Recorder), "test")
    try:
        trackers = Trackers(["absent-lib"], tmp_path, "train", {})
    finally:
        TRACKERS._items.pop("absent-lib")
    sink: list[dict[str, Any]] = []
    trackers.wrap(sink.append)({"step": 1, "loss": 0.5})
    trackers.close()
    assert sink == [{"step": 1, "loss": 0.5}] and not trackers.active
    assert "skipped: no_such_module_for_bnr is not installed" in caplog.text


def test_tracker_gets_every_training_record(tmp_path: Path, tiny_model_dir: Path, tiny_data: dict[str, Path]) -> None:
    TRACKERS.add("recorder", ("json", _Recorder), "test")
    try:
        over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path)
        argv = ["finetune", *over, "user.defense=none", "trackers=recorder", f"user.out={tmp_path / 'u'}"]
        assert main(argv) == 0
    finally:
        TRACKERS._items.pop("recorder")
    metrics = (tmp_path / "u" / "metrics.jsonl").read_text().splitlines()
    assert len(_Recorder.seen) == len(metrics) >= 2 and _Recorder.closed == 1
    assert {"stage", "step", "loss", "lr"} <= set(_Recorder.seen[0])


def test_trackers_are_off_by_default() -> None:
    from bnr.config import load_config

    assert load_config("toy").trackers == []
    assert set(TRACKERS.names()) >= {"tensorboard", "wandb"}


def test_wandb_files_live_beside_the_run_or_in_wandb_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bnr.trackers import wandb_dir

    monkeypatch.delenv("WANDB_DIR", raising=False)
    assert wandb_dir(tmp_path / "runs" / "user.partial") == tmp_path / "runs" / "wandb"  # not in the renamed folder
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "mine"))
    assert wandb_dir(tmp_path / "runs" / "user.partial") == tmp_path / "mine"
