"""Several processes on one job: who is who, the process group, and which process writes.

A `bnr` command is one process unless a launcher starts several (`accelerate launch --num_processes N`, or a
plain `torchrun --nproc_per_node N`): then `WORLD_SIZE` > 1 and every process runs the same recipe on the same
config. The training loop (`bnr.train`) gives each process its share of every micro-batch and averages the
gradients through accelerate's collectives, so N processes take the same optimizer steps as one. Everything
that lands on disk - run directories, checkpoints, metrics, manifests, stage keys, caches, the buffer
registry - is written by rank 0 only; the other ranks write into a private scratch folder that is dropped
(`bnr.artifacts.RunWriter`), so a launched job writes its runs once, not once per process.

Only this module knows how the processes are started; accelerate is imported on first use, and not at all in
a single process, so an unlaunched run is exactly the one-process code path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from bnr.errors import BnrError

T = TypeVar("T")
_state: dict[str, Any] = {}


def world_size() -> int:
    """The number of processes of this job (1 unless launched)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's global rank (0 unless launched)."""
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    """This process's rank on its machine (which GPU it uses)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def launched() -> bool:
    """True when a launcher started several processes for this job."""
    return world_size() > 1


def is_main() -> bool:
    """True on the process that writes (rank 0; always true in a single process)."""
    return rank() == 0


def uses_fsdp() -> bool:
    """True under `accelerate launch` with FSDP (`--use_fsdp`, or `distributed_type: FSDP` in its config)."""
    return launched() and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def accelerator() -> Any:
    """The job's one `accelerate.Accelerator` (joins the process group on first use); None in a single process."""
    if not launched():
        return None
    if "accelerator" not in _state:
        try:
            from accelerate import Accelerator
        except ImportError:  # pragma: no cover - accelerate is a dependency
            raise BnrError("a launched (WORLD_SIZE > 1) bnr job needs accelerate; pip install accelerate") from None
        # without a GPU, accelerate only forms a (gloo) process group when told it runs on the CPU
        _state["accelerator"] = Accelerator(cpu=not torch.cuda.is_available())
    return _state["accelerator"]


def device_for(device: str) -> str:
    """The device of this process: under a launcher `auto` / `cuda` mean this process's own GPU (LOCAL_RANK)."""
    if launched() and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    acc = accelerator()
    if acc is not None:
        acc.wait_for_everyone()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every process (a picklable object; no-op in a single process)."""
    if not launched():
        return obj
    accelerator()
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order, on every process ([obj] in a single process)."""
    if not launched():
        return [obj]
    accelerator()
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 first, then on the other ranks (which see what rank 0 made).

    A failure on rank 0 is raised on every rank (the others as a `BnrError` with rank 0's message), so a bad
    input stops the whole job with one message instead of leaving the other ranks waiting.
    """
    if not launched():
        return fn()
    if is_main():
        try:
            result = fn()
        except Exception as e:
            broadcast(str(e) or type(e).__name__)
            raise
        broadcast(None)
        return result
    failure = broadcast(None)
    if failure is not None:
        raise BnrError(failure)
    return fn()


def shard(items: list[T]) -> list[T]:
    """This process's contiguous share of `items` (sizes differ by at most one; the whole list unlaunched)."""
    n, size, r = len(items), world_size(), rank()
    if size == 1:
        return items
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return items[start : start + base + (1 if r < extra else 0)]


def sum_across(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over all processes, on every process (`t` itself unlaunched)."""
    acc = accelerator()
    if acc is None:
        return t
    from accelerate.utils import reduce

    out: torch.Tensor = reduce(t, reduction="sum")
    return out
