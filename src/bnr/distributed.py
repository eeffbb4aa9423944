"""Several processes on one job: who is who, the process group, and which process writes.

A `bnr` command is one process unless a launcher starts several (`bnr CMD --nproc N`, which is `launch` below,
`accelerate launch --num_processes N`, or a plain `torchrun --nproc_per_node N`): then `WORLD_SIZE` > 1 and
every process runs the same recipe on the same config. The training loop (`bnr.train`) gives each process its
share of every micro-batch and averages the gradients through accelerate's collectives, so N processes take the
same optimizer steps as one. Everything
that lands on disk - run directories, checkpoints, metrics, manifests, stage keys, caches, the buffer
registry - is written by rank 0 only; the other ranks write into a private scratch folder that is dropped
(`bnr.runs.writer.RunWriter`), so a launched job writes its runs once, not once per process.

Under `accelerate launch --use_fsdp --fsdp_version 2` the loop also shards the model (`shard_model`): torch's
FSDP2 (`fully_shard`) on every decoder layer and on the root, so each process holds 1/N of the frozen base, of
the trainable LoRA weights, of their gradients and of AdamW's state. accelerate's own FSDP preparation is not
used: on a CPU (gloo) accelerate 1.15 silently runs DDP instead of FSDP, while `fully_shard` runs on CPU and
GPU alike, so the sharded loop tested here is the one that runs on GPUs.

Only this module knows how the processes are started and how weights are sharded; accelerate is imported on
first use, and not at all in a single process, so an unlaunched run is exactly the one-process code path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bnr.errors import BnrError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI asks `is_main` before any model (bnr ls, --help)
    import torch

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


def _fsdp_layer_names(model: torch.nn.Module) -> set[str]:
    """The module classes that become one FSDP unit each: `--fsdp_transformer_layer_cls_to_wrap` when given, else
    the model's own `_no_split_modules` (its decoder layer, e.g. `LlamaDecoderLayer`)."""
    present = {type(m).__name__ for m in model.modules()}
    given = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    if given:
        names = {n.strip() for n in given.split(",") if n.strip()}
        missing = sorted(names - present)
        if missing:
            raise BnrError(
                f"--fsdp_transformer_layer_cls_to_wrap names {', '.join(missing)}, which this model does not have; "
                "give one of its decoder layer classes or leave the option out"
            )
        return names
    names = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return names & present


def shard_model(model: torch.nn.Module) -> int:
    """Shard `model` in place with FSDP2 across this job's processes (call it on every rank, before the optimizer).

    Each decoder layer is one unit and the root holds the rest (embeddings, final norm, head). FSDP2 shards every
    parameter on its own, so a unit holding a frozen base weight and its trainable LoRA factors needs no special
    wrapping policy (FSDP1's flat parameters would need `use_orig_params`). Gradients are summed over the
    processes, not averaged: the loop weights each process's loss by its share of the micro-batch. Returns the
    number of FSDP units."""
    import torch

    if os.environ.get("FSDP_VERSION", "1").strip() != "2":
        raise BnrError(
            "bnr shards with FSDP2 (torch's fully_shard); FSDP1 (accelerate's default) is not supported: "
            "add --fsdp_version 2 to accelerate launch"
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    accelerator()  # joins the process group
    # on a GPU machine the shards go to this process's GPU, even from a base loaded into CPU RAM (model.device=cpu)
    device = "cuda" if torch.cuda.is_available() else next(model.parameters()).device.type
    if device == "cuda":
        torch.cuda.set_device(local_rank())
    mesh = init_device_mesh(device, (world_size(),))
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in ("1", "true", "yes")
    layers = _fsdp_layer_names(model)
    for module in list(model.modules())[1:]:
        if type(module).__name__ in layers:
            fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in units:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no pre-multiplied sum
    return len(units)


def is_sharded(model: torch.nn.Module) -> bool:
    """True once `shard_model` has sharded `model` (always false in a single process)."""
    if not launched():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole value of a (possibly FSDP-sharded) tensor; sharded, a collective: every rank calls it, in order."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def accelerator() -> Any:
    """The job's one `accelerate.Accelerator` (joins the process group on first use); None in a single process."""
    import torch

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
    import torch

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
    import torch

    if not launched():
        return obj
    accelerator()
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order, on every process ([obj] in a single process)."""
    import torch

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


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimizer state of a sharded model, keyed by parameter name, on rank 0 ({} on the others).
    A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_sharded(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, params: dict[str, Any], optim: dict[str, Any]
) -> None:
    """Shard whole trainable weights and a `full_optimizer_state` (every rank holds them) into a sharded model
    and its optimizer. A collective: every rank calls it."""
    from torch.distributed.checkpoint import state_dict as dcp

    options = dcp.StateDictOptions(full_state_dict=True, strict=False)
    dcp.set_model_state_dict(model, params, options=options)
    dcp.set_optimizer_state_dict(model, optimizer, optim, options=options)


def launch(argv: list[str], nproc: int, fsdp: bool = False) -> int:
    """Run `bnr ARGV` as `nproc` processes on this machine (`bnr CMD --nproc N`), as `torchrun --standalone` would,
    and return the job's exit status. `fsdp` shards the model with FSDP2, as `accelerate launch --use_fsdp
    --fsdp_version 2` does. A process that fails has printed its own one-line error; this adds one line that
    says which ranks failed, in place of torchrun's traceback and failure report."""
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if fsdp:
        os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its SIGTERM / failure notices
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "bnr.cli", *argv)
    except ChildFailedError as e:
        first, failure = e.get_first_failure()
        print(
            f"bnr: error: {len(e.failures)} of {nproc} processes failed, first rank {first} (exit code "
            f"{failure.exitcode}); its message is above",
            file=sys.stderr,
        )
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0
