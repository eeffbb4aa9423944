from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnr.artifacts import assert_no_buffer, is_complete, read_manifest
from bnr.errors import BnrError
from bnr.runs.writer import RunWriter


def test_run_appears_only_when_finalized(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "run", "user")
    (w.tmp / "adapter_model.safetensors").write_bytes(b"x")
    w.log_metrics({"step": 1, "loss": 1.0})
    assert not (tmp_path / "run").exists() and not is_complete(tmp_path / "run")
    w.finalize({"seed": 1})
    m = read_manifest(tmp_path / "run", expect_stage="user")
    assert m["status"] == "complete" and m["seed"] == 1 and "torch" in m["versions"]
    assert not Path(str(tmp_path / "run") + ".partial").exists()
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["loss"] == 1.0


def test_complete_run_needs_overwrite(tmp_path: Path) -> None:
    RunWriter(tmp_path / "run", "user").finalize({})
    with pytest.raises(BnrError, match="already holds a complete run"):
        RunWriter(tmp_path / "run", "user")
    w = RunWriter(tmp_path / "run", "user", overwrite=True)
    w.finalize({"seed": 2})
    assert read_manifest(tmp_path / "run")["seed"] == 2


def test_wrong_stage_and_incomplete_parent(tmp_path: Path) -> None:
    RunWriter(tmp_path / "run", "user").finalize({})
    with pytest.raises(BnrError, match="is a 'user' run, expected a 'buffer' run"):
        read_manifest(tmp_path / "run", expect_stage="buffer")
    RunWriter(tmp_path / "half", "user", resume=True)
    with pytest.raises(BnrError, match="unfinished run exists beside it"):
        read_manifest(tmp_path / "half")


def test_buffer_runs_are_refused_by_exports(tmp_path: Path) -> None:
    RunWriter(tmp_path / "buf", "buffer").finalize({"contains_buffer": True})
    with pytest.raises(BnrError, match="BufferLoRA"):
        assert_no_buffer(tmp_path / "buf")
    RunWriter(tmp_path / "user", "user").finalize({"contains_buffer": False})
    assert_no_buffer(tmp_path / "user")


def test_a_stage_clock_times_the_work_done_before_the_run_folder_opens(tmp_path: Path) -> None:
    """A finalize hook prunes or projects first and opens its run folder last; the deliverable's wall_time_s
    must still cover that work (userjob.finalize runs every hook inside `stage_clock`)."""
    import time

    from bnr.runs.writer import stage_clock

    with stage_clock():
        time.sleep(0.3)
        RunWriter(tmp_path / "final", "antidote").finalize({})
    RunWriter(tmp_path / "plain", "merge").finalize({})
    assert read_manifest(tmp_path / "final")["wall_time_s"] >= 0.3
    assert read_manifest(tmp_path / "plain")["wall_time_s"] < 0.3  # outside the block: from the folder's opening


def test_finalize_hooks_run_inside_the_stage_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from bnr.orchestrate import userjob
    from bnr.runs.writer import STAGE_STARTED

    seen: list[float | None] = []
    defense = SimpleNamespace(final_artifacts=(), finalize=lambda job, run: seen.append(STAGE_STARTED.get()))
    job = SimpleNamespace(defense=defense, final_out=Path("unused-final"))
    userjob.finalize(job, Path("unused"), key="0123456789abcdef")  # type: ignore[arg-type]
    assert seen and seen[0] is not None and STAGE_STARTED.get() is None


def test_parents_in_the_same_runs_tree_are_recorded_relative_and_read_back(tmp_path: Path) -> None:
    from bnr.artifacts import parent_path, relative_parents

    run = tmp_path / "runs" / "cells" / "c1" / "final"
    near, far = tmp_path / "runs" / "users" / "u1", Path("/opt/elsewhere/models/reinforce")
    manifest = {"parents": [{"stage": "user", "path": str(near)}, {"stage": "reinforce", "path": str(far)}]}
    recorded = relative_parents(manifest, run)
    assert [p["path"] for p in recorded["parents"]] == ["../../../users/u1", str(far)]  # far: another tree
    assert parent_path(recorded, "user", run) == near and parent_path(recorded, "reinforce", run) == far
    assert parent_path(manifest, "user", run) == near  # an older manifest's absolute path reads as it is
    assert parent_path(recorded, "buffer", run) is None and relative_parents({"seed": 1}, run) == {"seed": 1}
