"""`bnr sweep sweep.launcher=ray`: the sweep's shared provider stages and its cells as Ray tasks.

The work is the serial sweep's, cut into waves so that no two tasks ever write the same folder:
1. provider stages, one wave per depth (buffer, then what is trained on it): one task per distinct provider
   configuration, so cells that share a buffer wait for one build of it;
2. one cell per UserLoRA training (cells that differ only after training share `<out>/users/<key>/`);
3. every other cell (its UserLoRA is then reused, as in the serial sweep).
A task is the serial code (`build_providers`, `bnr.orchestrate.grid.run_cell`) run in a Ray worker, so every stage is
reused when current and resumed from its checkpoints when not: a killed sweep restarts where it stopped, and
its results are the serial sweep's. A task that fails is run again `sweep.retries` times; then it is
reported (with the cells that needed it) and the other cells go on.

Ray starts locally (`ray.init()` with `sweep.ray_cpus` CPUs) unless `sweep.ray_address` names a cluster, whose
nodes need bnr installed and the sweep folder, data and base model on a shared file system.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bnr.config import Config, SweepConfig
from bnr.defenses import PROVIDERS, get_defense
from bnr.errors import BnrError
from bnr.orchestrate.grid import Cell, cell_config
from bnr.orchestrate.providers import build_providers
from bnr.orchestrate.userjob import make_job, user_key
from bnr.runs.keys import stage_key
from bnr.runs.providers import closure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One unit of work: `fn(*args)` in a worker; `cells` are the cells that cannot run if it fails."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    cells: tuple[str, ...]


class Executor(Protocol):
    def submit(self, task: Task) -> Any:
        """Start `task`; returns a handle."""

    def next_done(self, handles: list[Any]) -> tuple[Any, str | None]:
        """Wait for one of `handles` to finish: (its handle, its error message or None)."""


def in_worker(level: int, quiet: bool, threads: int | None, fn: Callable[..., Any], *args: Any) -> Any:
    """In a worker: set up its output as the driver's (`bnr.cli.configure_logging` at the driver's level, so no
    library deprecation notice; progress as log lines, or off with --quiet) and the sweep's torch threads
    (`sweep.sweep_threads`; None keeps Ray's one per reserved CPU), then `fn(*args)`. Ray streams a worker's
    output to the driver, so what a worker writes lands in the user's terminal or log file."""
    from bnr import progress
    from bnr.cli import configure_logging
    from bnr.seeding import torch_threads

    configure_logging(level)
    progress.configure("off" if quiet else "auto")  # a worker has no terminal: `auto` writes log lines
    with torch_threads(threads):
        return fn(*args)


class RayExecutor:
    """Tasks as Ray remote functions with the sweep's CPU / GPU reservation (Ray's own retries off: ours count),
    each run through `in_worker` with the driver's log level."""

    def __init__(self, ray: Any, sweep: SweepConfig, threads: int | None = None) -> None:
        from bnr import progress

        self.ray = ray
        options = {"num_cpus": sweep.cpus_per_cell, "num_gpus": sweep.gpus_per_cell, "max_retries": 0}
        self._remote = ray.remote(**options)(in_worker)
        self._setup = (logging.getLogger().getEffectiveLevel(), progress.current_mode() == "off", threads)

    def submit(self, task: Task) -> Any:
        # named after the task, so the driver prefixes a worker's lines with `(cell <name> pid=...)`
        return self._remote.options(name=task.name).remote(*self._setup, task.fn, *task.args)

    def next_done(self, handles: list[Any]) -> tuple[Any, str | None]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        try:
            self.ray.get(ready[0])
        except Exception as e:
            cause = getattr(e, "cause", None) or e
            return ready[0], (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
        return ready[0], None


def plain_output() -> None:
    """Ray prints each worker line on the driver behind a coloured `(task pid=...)` prefix, and marks repeated
    lines in green: ANSI codes that a log file (`bnr sweep ... 2> sweep.log`) would keep. Off unless both output
    streams are terminals, through Ray's own settings (`RAY_COLOR_PREFIX=0`; `RAY_DEDUP_LOGS=0`, which Ray reads
    when imported, so it holds when bnr imports Ray first); a value the user set is kept."""
    if all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr)):
        return
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def start_ray(sweep: SweepConfig) -> Any:
    """The `ray` module with Ray started: a local one, or the cluster at `sweep.ray_address`."""
    plain_output()
    try:
        import ray
    except ImportError:
        raise BnrError(
            "sweep.launcher=ray needs Ray: pip install 'bnr[ray]' (or pip install ray), or use sweep.launcher=local"
        ) from None
    if not ray.is_initialized():
        where = {"address": sweep.ray_address} if sweep.ray_address else {"num_cpus": sweep.ray_cpus}
        ray.init(**where, include_dashboard=False, logging_level=logging.WARNING)
    return ray


def run_wave(tasks: list[Task], executor: Executor, retries: int) -> dict[str, str]:
    """Run `tasks` concurrently; a failed one is submitted again up to `retries` times. Returns the failures:
    cell name -> why (the failed task's name and last error)."""
    running = {executor.submit(t): (t, 1) for t in tasks}
    failed: dict[str, str] = {}
    while running:
        handle, error = executor.next_done(list(running))
        task, attempt = running.pop(handle)
        if error is None:
            log.info("done: %s", task.name)
        elif attempt <= retries:
            log.warning("%s failed (attempt %d of %d): %s; retrying", task.name, attempt, retries + 1, error)
            running[executor.submit(task)] = (task, attempt + 1)
        else:
            log.error("%s failed after %d attempt(s): %s", task.name, attempt, error)
            failed.update({cell: f"{task.name}: {error} (after {attempt} attempt(s))" for cell in task.cells})
    return failed


def run_cells(cfg: Config, cells: list[Cell], executor: Executor | None = None) -> dict[str, str]:
    """Run `cells` of the sweep `cfg` as Ray tasks (or on `executor`); returns the failed cells and why."""
    from bnr.recipes.sweep import sweep_threads

    executor = executor or RayExecutor(start_ray(cfg.sweep), cfg.sweep, sweep_threads(cfg))
    failed: dict[str, str] = {}
    if cfg.sweep.providers == "build":
        for wave in provider_waves(cfg, cells):
            failed |= run_wave([t for t in wave if not set(t.cells) & set(failed)], executor, cfg.sweep.retries)
    ok = [c for c in cells if c.name not in failed]
    first: list[Cell] = []
    rest: list[Cell] = []
    seen: set[str] = set()
    for cell in ok:
        try:
            key = _user_key(cfg, cell)
        except BnrError as e:
            failed[cell.name] = str(e)
            continue
        (rest if key in seen else first).append(cell)
        seen.add(key)
    for wave_cells in (first, rest):
        tasks = [Task(f"cell {c.name}", run_cell_task, (cfg, c), (c.name,)) for c in wave_cells]
        failed |= run_wave(tasks, executor, cfg.sweep.retries)
    return failed


def _provider_cfg(cfg: Config, cell: Cell) -> Config:
    return dataclasses.replace(cell_config(cfg, cell), seed=cfg.seed)  # providers use the sweep's seed


def _depth(name: str) -> int:
    parents = PROVIDERS.get(name).parents
    return 1 + max(map(_depth, parents)) if parents else 0


def provider_waves(cfg: Config, cells: list[Cell]) -> list[list[Task]]:
    """The provider builds of `cells`, one wave per depth, one task per distinct configuration."""
    by_depth: dict[int, dict[str, Task]] = {}
    for cell in cells:
        pcfg = _provider_cfg(cfg, cell)
        names = closure(get_defense(pcfg.user.defense).requires)
        for depth in sorted({_depth(n) for n in names}):
            level = tuple(n for n in names if _depth(n) == depth)
            signature = _signature(pcfg, level)
            tasks = by_depth.setdefault(depth, {})
            old = tasks.get(signature)
            cell_names = (*(old.cells if old else ()), cell.name)
            tasks[signature] = Task(
                f"provider {'+'.join(level)} [{signature[:8]}]", build_providers_task, (pcfg, level), cell_names
            )
    return [list(by_depth[d].values()) for d in sorted(by_depth)]


def _signature(pcfg: Config, names: tuple[str, ...]) -> str:
    """What the stage keys of `names` and their parents depend on (their config sections and extras)."""
    chain = closure(names)
    sections = tuple(s for n in chain for s in PROVIDERS.get(n).sections)
    extras = [PROVIDERS.get(n).extra(pcfg) if PROVIDERS.get(n).extra else None for n in chain]  # type: ignore[misc]
    return stage_key(pcfg, sections, {}, {"chain": chain, "extras": extras})


def _user_key(cfg: Config, cell: Cell) -> str:
    from bnr.orchestrate.grid import with_providers

    return user_key(make_job(with_providers(cfg, cell_config(cfg, cell))))


def _place(root: Path, name: str, key: str) -> Path:
    return root / f"{name}-{key}"


def build_providers_task(pcfg: Config, names: tuple[str, ...]) -> None:
    """In a worker: build (or reuse) the provider stages `names` where the serial sweep puts them."""
    place_at = functools.partial(_place, Path(pcfg.sweep.out) / "providers")
    build_providers(pcfg, names, place_at)


_BENCHMARKS: dict[str, Any] = {}


def run_cell_task(cfg: Config, cell: Cell) -> None:
    """In a worker: one cell, exactly as the serial sweep runs it (benchmarks and judges built once per worker)."""
    from bnr.artifacts import hash_json
    from bnr.eval.protocols import PROTOCOLS
    from bnr.eval.suite import build_benchmarks
    from bnr.orchestrate.grid import run_cell, with_providers

    key = hash_json(dataclasses.asdict(cfg.eval))
    if key not in _BENCHMARKS:
        _BENCHMARKS[key] = build_benchmarks(PROTOCOLS.get(cfg.eval.protocol), cfg.eval)
    run_cell(with_providers(cfg, cell_config(cfg, cell)), _BENCHMARKS[key], cell.values())
