"""A defense's step hooks (`bnr.train.StepCallback`) inside a `transformers.Trainer` (and so TRL's trainers).

The Trainer calls `on_pre_optimizer_step` after the step's gradients are accumulated and clipped, as bnr's loop
calls `before_optimizer_step`, and `on_optimizer_step` right after the update (`after_optimizer_step`); the step
index is the Trainer's `global_step` before it is incremented, the 0-based index bnr's loop uses. What the hooks
return joins the Trainer's logs. Checkpoint state (`state_dict`) is not saved with the Trainer's checkpoints: a
resumed Trainer run restarts the hooks' state (bnr's own loop resumes it exactly).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback

from bnr.train import StepCallback, StepContext


class StepHooksCallback(TrainerCallback):  # type: ignore[misc]
    """Runs bnr `StepCallback`s at the Trainer's optimizer steps."""

    def __init__(self, hooks: list[StepCallback]) -> None:
        self.hooks = list(hooks)
        self.logged: dict[str, float] = {}
        self._loss = math.nan

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        for hook in self.hooks:
            hook.on_train_start(model, state.max_steps)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        ctx = StepContext(step=state.global_step, total=state.max_steps)
        for hook in self.hooks:
            hook.before_optimizer_step(model, ctx)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        ctx = StepContext(step=state.global_step, total=state.max_steps)
        for hook in self.hooks:
            self.logged.update(hook.after_optimizer_step(model, ctx, self._loss) or {})

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs is not None:
            self._loss = float(logs.get("loss", self._loss))
            logs.update(self.logged)
