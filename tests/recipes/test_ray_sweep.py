"""`sweep.launcher=ray`: waves without shared writers, retries, failure reports; a local 2-CPU Ray on the toy world."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bnr.artifacts import MANIFEST
from bnr.cli import main
from bnr.config import load_config
from bnr.errors import BnrError
from bnr.orchestrate.grid import cell_config, grid
from bnr.recipes import ray_sweep, sweep
from bnr.recipes.ray_sweep import Task, run_wave

# the toy world made small: 4 cells (none, bnr x 2 seeds) in well under a minute each way on 2 cores
TOY = [
    "buffer.n=32",
    "reinforce.n_refusal=32",
    "reinforce.n_benign=32",
    "sweep.n=[32]",
    "sweep.p=[0.5]",
    "buffer.train.epochs=1",
    "reinforce.train.epochs=1",
    "user.train.epochs=1",
    "eval.limit=8",
    "eval.max_new_tokens=8",
    "sweep.plots=false",
    "eval.progress=false",
    "buffer.train.progress=false",
    "reinforce.train.progress=false",
    "user.train.progress=false",
]


class InlineExecutor:
    """Runs each task at once in this process; the tasks named in `flaky` fail on their first attempt."""

    def __init__(self, flaky: tuple[str, ...] = ()) -> None:
        self.flaky = set(flaky)
        self.calls: list[str] = []
        self.errors: dict[int, str | None] = {}

    def submit(self, task: Task) -> int:
        self.calls.append(task.name)
        handle = len(self.calls)
        self.errors[handle] = None
        try:
            if task.name in self.flaky:
                self.flaky.discard(task.name)
                raise RuntimeError("worker lost")
            task.fn(*task.args)
        except Exception as e:
            self.errors[handle] = str(e)
        return handle

    def next_done(self, handles: list[int]) -> tuple[int, str | None]:
        return handles[0], self.errors[handles[0]]


def _fail() -> None:
    raise BnrError("no such data")


def test_a_failed_task_is_retried_once_then_reported_with_its_cells() -> None:
    ex = InlineExecutor(flaky=("flaky",))
    tasks = [
        Task("flaky", lambda: None, (), ("a",)),
        Task("broken", _fail, (), ("b", "c")),
        Task("ok", print, (), ("d",)),
    ]
    failed = run_wave(tasks, ex, retries=1)
    assert ex.calls.count("flaky") == 2 and ex.calls.count("broken") == 2 and ex.calls.count("ok") == 1
    assert set(failed) == {"b", "c"} and "no such data (after 2 attempt(s))" in failed["b"]
    assert set(run_wave([Task("broken", _fail, (), ("b",))], InlineExecutor(), retries=0)) == {"b"}


def test_missing_ray_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BnrError, match=r"sweep.launcher=ray needs Ray: pip install 'bnr\[ray\]'"):
        ray_sweep.start_ray(load_config("toy-grid").sweep)


def test_provider_stages_are_one_task_per_configuration_in_depth_waves() -> None:
    cfg = load_config("toy-grid", [*TOY, "sweep.seeds=[1,2]", "sweep.axes={buffer.n: [16, 32]}"])
    waves = ray_sweep.provider_waves(cfg, grid(cfg))
    assert [[t.name.split(" [")[0] for t in w] for w in waves] == [["provider buffer"] * 2, ["provider reinforce"] * 2]
    for wave in waves:  # each bnr cell waits on exactly one task per wave; `none` needs no provider
        cells = [c for t in wave for c in t.cells]
        assert sorted(cells) == sorted(c.name for c in grid(cfg) if c.defense == "bnr")
        assert all(len(t.cells) == 2 for t in wave)  # the two seeds share the sweep-seeded provider


def test_failed_cells_are_reported_in_sweep_json_and_stop_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = "cell x: boom (after 2 attempt(s))"
    monkeypatch.setattr(ray_sweep, "run_cells", lambda cfg, cells: {cells[0].name: why})
    cfg = load_config("toy-grid", [*TOY, f"sweep.out={tmp_path}", "sweep.launcher=ray"])
    with pytest.raises(BnrError, match="1 of 4 sweep cell"):
        sweep.run(cfg)
    status = json.loads((tmp_path / "sweep.json").read_text())
    assert status["failed"] == {grid(cfg)[0].name: why} and status["finished"] == 0


def test_max_cells_selects_finished_cells_and_that_many_new_ones(tmp_path: Path) -> None:
    cfg = load_config("toy-grid", [*TOY, f"sweep.out={tmp_path}", "sweep.max_cells=1"])
    cells = grid(cfg)
    done = Path(cell_config(cfg, cells[2]).eval.out)
    done.mkdir(parents=True)
    (done / MANIFEST).write_text(json.dumps({"status": "complete"}))
    assert sweep.selected_cells(cfg, cells) == [cells[0], cells[2]]


def _table(out: Path) -> tuple[str, list[dict[str, Any]]]:
    """The sweep's table and rows without the cost column (training wall time differs from run to run)."""
    from bnr.eval.tables import markdown_table

    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in r.items() if k != "train_s"} for r in rows]
    keep = ("p", "n", "seed", "hs", "over_refusal", "fa")
    return markdown_table([{"defense": r["label"], **{k: r[k] for k in keep}} for r in rows]), rows


@pytest.mark.slow
def test_ray_sweep_on_two_cpus_equals_the_serial_sweep_and_resumes(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    assert main(["--quiet", "sweep", "-c", "toy-grid", *TOY, f"sweep.out={tmp_path / 'serial'}"]) == 0
    args = ["--quiet", "sweep", "-c", "toy-grid", *TOY, f"sweep.out={tmp_path / 'ray'}", "launcher=ray"]
    try:
        assert main([*args, "sweep.ray_cpus=2"]) == 0
        assert _table(tmp_path / "ray") == _table(tmp_path / "serial")
        evals = sorted((tmp_path / "ray" / "cells").glob(f"*/eval/{MANIFEST}"))
        stamps = [p.read_text() for p in evals]
        assert len(stamps) == 4
        assert main(args) == 0  # again, on the Ray already running: every stage is reused, nothing is redone
        assert [p.read_text() for p in evals] == stamps
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_a_ray_sweeps_log_file_holds_no_colour_codes_and_no_library_warnings(tmp_path: Path) -> None:
    """`bnr sweep launcher=ray 2> sweep.log` on a local 1-CPU Ray: the workers' lines reach the file as the
    serial sweep's would, with no ANSI colour code from Ray's prefixes and no transformers deprecation warning."""
    pytest.importorskip("ray", reason="sweep.launcher=ray needs ray (pip install 'bnr[ray]')")
    import os
    import subprocess

    out, log = tmp_path / "sweep", tmp_path / "sweep.log"
    cmd = [sys.executable, "-m", "bnr", "sweep", "-c", "toy-grid", *TOY, f"sweep.out={out}"]
    cmd += ["sweep.defenses=[none]", "sweep.seeds=[42]", "launcher=ray", "sweep.ray_cpus=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env = {k: v for k, v in env.items() if k not in ("RAY_COLOR_PREFIX", "RAY_DEDUP_LOGS")}
    with log.open("w") as sink:
        done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, timeout=300, check=False)
    text = log.read_text()
    assert done.returncode == 0, text[-2000:]
    assert "(cell none-p0.5-n32-s42 pid=" in text  # a worker's line came through, named after its task
    assert "\x1b[" not in text
    assert not [line for line in text.splitlines() if "Warning" in line or "transformers/" in line], text
