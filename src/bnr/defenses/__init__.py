"""Defenses behind one interface, chosen by name with `user.defense=NAME` (`bnr ls defenses`).

A defense says how the user job is trained (which frozen adapters sit under the UserLoRA) and what happens
after it (merging the ReinforceLoRA). The training loop itself is the same for all of them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bnr.registry import Registry

if TYPE_CHECKING:
    from bnr.config import Config


@dataclass(frozen=True)
class Defense:
    """`uses_buffer`: train the UserLoRA with the BufferLoRA attached frozen.
    `merge_reinforce`: the deliverable is the UserLoRA QR-merged with the ReinforceLoRA, made by the recipe
    module `finalize` (its `run(cfg)` writes the merge run at `merge.out`)."""

    name: str
    uses_buffer: bool
    merge_reinforce: bool
    doc: str
    finalize: str = "bnr.recipes.merge"

    def finalize_run(self, cfg: Config) -> Path:
        """Turn the trained UserLoRA (`merge.user`) into the deliverable at `merge.out`."""
        return Path(importlib.import_module(self.finalize).run(cfg))


DEFENSES: Registry[Defense] = Registry("defense")

for _d in (
    Defense("none", False, False, "plain LoRA SFT on the user's data (the undefended baseline)"),
    Defense("sft", False, False, "alias of none"),
    Defense("buffer-only", True, False, "UserLoRA trained with the buffer frozen; buffer dropped, no ReinforceLoRA"),
    Defense(
        "reinforce-only", False, True, "ablation: plain SFT UserLoRA QR-merged with the ReinforceLoRA (no buffer)"
    ),
    Defense("bnr", True, True, "Buffer-and-Reinforce: buffer frozen during training, then QR merge of ReinforceLoRA"),
    Defense(
        "bnr-calibrated",
        True,
        True,
        "Buffer-and-Reinforce with the merge strengths, alpha and layers chosen by `bnr calibrate` (calibrate.*)",
        finalize="bnr.recipes.calibrate",
    ),
):
    DEFENSES.add(_d.name, _d, _d.doc)
