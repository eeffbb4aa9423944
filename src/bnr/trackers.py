"""Optional experiment trackers fed with the training loop's metric records (`trackers=[tensorboard,wandb]`).

Off by default. Each tracker is a small callback on the records `metrics.jsonl` already gets (stage, step, loss,
lr, grad_norm, ...). Their libraries are optional extras (`pip install "bnr[tensorboard]"` / `"bnr[wandb]"`); a
tracker whose library is absent is skipped with one warning and the run goes on. W&B reads its usual environment
(`WANDB_PROJECT`, `WANDB_MODE=offline`, `WANDB_API_KEY`), never a config file.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bnr.registry import Registry

log = logging.getLogger(__name__)

Record = dict[str, Any]


class Tracker(Protocol):
    def log(self, record: Record) -> None: ...

    def close(self) -> None: ...


# name -> (python module it needs, factory(run_dir, run name, config dict) -> Tracker)
TrackerFactory = Callable[[Path, str, dict[str, Any]], Tracker]
TRACKERS: Registry[tuple[str, TrackerFactory]] = Registry("tracker")


def _scalars(record: Record) -> dict[str, float]:
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class _TensorBoard:
    def __init__(self, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.name = name

    def log(self, record: Record) -> None:
        step = int(record.get("step", 0))
        for key, value in _scalars(record).items():
            if key != "step":
                self.writer.add_scalar(f"{record.get('stage', self.name)}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


def wandb_dir(run_dir: Path) -> Path:
    """Where W&B keeps its files: `$WANDB_DIR` when set, else `wandb/` beside the run - never inside the run's
    `.partial` folder, which is renamed when the run completes (the sync path W&B prints would point nowhere)."""
    import os

    from bnr.artifacts import PARTIAL_SUFFIX

    if os.environ.get("WANDB_DIR"):
        return Path(os.environ["WANDB_DIR"])
    final = Path(str(run_dir).removesuffix(PARTIAL_SUFFIX))
    return final.parent / "wandb"


class _WandB:
    def __init__(self, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        folder = wandb_dir(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(name=name, config=config, dir=str(folder), reinit=True)

    def log(self, record: Record) -> None:
        self.run.log({f"{record.get('stage', 'train')}/{k}": v for k, v in _scalars(record).items()})

    def close(self) -> None:
        self.run.finish()


TRACKERS.add("tensorboard", ("tensorboard", _TensorBoard), "TensorBoard event files in <run>/tensorboard")
TRACKERS.add(
    "wandb", ("wandb", _WandB), "Weights & Biases run (WANDB_PROJECT, WANDB_MODE, WANDB_DIR from the environment)"
)


class Trackers:
    """The trackers of one training stage; `wrap(sink)` is an `on_log` callback that feeds `sink` and them."""

    def __init__(self, names: list[str], run_dir: Path, name: str, config: dict[str, Any]) -> None:
        self.active: list[Tracker] = []
        for tracker in names:
            module, factory = TRACKERS.get(tracker)
            if importlib.util.find_spec(module) is None:
                log.warning(
                    "tracker %r skipped: %s is not installed (pip install 'bnr[%s]')", tracker, module, tracker
                )
                continue
            self.active.append(factory(run_dir, name, config))

    def wrap(self, sink: Callable[[Record], None]) -> Callable[[Record], None]:
        def on_log(record: Record) -> None:
            sink(record)
            for tracker in self.active:
                tracker.log(record)

        return on_log

    def close(self) -> None:
        for tracker in self.active:
            tracker.close()
        self.active = []
