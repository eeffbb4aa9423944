"""Shared machinery of the performance suite: interleaved timing, peak memory, machine facts, result records.

Absolute times on a shared machine are noise, so every figure is a ratio of two (or more) candidates timed in
the same run: repetitions are interleaved (A B, B A, A B, ...) and the medians are compared.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# The clock every ratio uses: "cpu" (this process's CPU time: what a job costs, and far less disturbed by other
# jobs on a shared machine than wall time) or "wall" (set by run.py: always on CUDA, where work is asynchronous).
CLOCK = {"name": "cpu"}


def now() -> float:
    return time.process_time() if CLOCK["name"] == "cpu" else time.perf_counter()


@dataclass(frozen=True)
class Scale:
    """How big the suite runs: `smoke` (tiny shapes, one repetition) or `full` (real shapes)."""

    smoke: bool
    reps: int
    device: str = "cpu"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class Figure:
    """One reported number: `ratio` = `numerator` time / `denominator` time (or the quantity named in `of`)."""

    id: str
    of: str
    ratio: float
    target: str | None = None
    met: bool | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_target(ratio: float, target: str | None) -> bool | None:
    """`target` is '<= X' or '>= X'."""
    if target is None:
        return None
    op, value = target.split()
    return ratio <= float(value) if op == "<=" else ratio >= float(value)


def figure(fid: str, of: str, ratio: float, target: str | None = None, **kw: Any) -> Figure:
    return Figure(fid, of, float(ratio), target, check_target(ratio, target), **kw)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(
    candidates: Mapping[str, Callable[[], Any]],
    reps: int,
    *,
    warmup: int = 1,
    device: str = "cpu",
    memory: dict[str, float] | None = None,
    warmups: Mapping[str, Callable[[], Any]] | None = None,
) -> dict[str, list[float]]:
    """Times (the suite's clock) of each candidate over `reps` interleaved rounds (the order alternates every round).

    The first warm-up call of each candidate measures its peak memory into `memory` when given. `warmups` gives a
    cheaper warm-up call per candidate (same code path and peak memory, less work: e.g. the first batch only).
    """
    names = list(candidates)
    warm = {n: (warmups or {}).get(n, candidates[n]) for n in names}
    for w in range(warmup):
        for n in names:
            if w == 0 and memory is not None:
                memory[n] = peak_memory_mb(warm[n], device)[0]
            else:
                warm[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        for n in names if rep % 2 == 0 else reversed(names):
            gc.collect()
            sync(device)
            t0 = now()
            candidates[n]()
            sync(device)
            times[n].append(now() - t0)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {k: median(v) for k, v in times.items()}


# ---------------------------------------------------------------- peak memory


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_rss_peak() -> bool:
    """Trim malloc's free lists and reset the kernel's RSS high-water mark (Linux `clear_refs` 5)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_mb(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, str]:
    """Extra peak memory of one call of `fn` in MiB and how it was measured.

    CUDA: `torch.cuda.max_memory_allocated` above the allocation before the call. CPU: the process's resident
    set high-water mark (VmHWM) above its RSS before the call, after trimming malloc and resetting the mark.
    """
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20, "torch.cuda.max_memory_allocated"
    if not Path("/proc/self/status").is_file() or not _reset_rss_peak():
        import tracemalloc

        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20, "tracemalloc (Python allocations only)"
    before = _status_kb("VmRSS")
    fn()
    return max(0, _status_kb("VmHWM") - before) / 1024, "RSS high-water mark (VmHWM - VmRSS before)"


def python_peak_mb(fn: Callable[[], Any]) -> float:
    """Peak Python-heap allocation of one call (tracemalloc), for pure-Python candidates such as judges."""
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine(device: str) -> dict[str, Any]:
    """Where the numbers came from: CPU, cores, torch threads, device name, library versions, load now."""
    import peft
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": device,
        "load_avg_start": load_average(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info
