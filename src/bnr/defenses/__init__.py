"""Defenses behind one interface, chosen by name with `user.defense=NAME` (`bnr ls defenses`).

A defense says how the user job is trained (which frozen adapters sit under the UserLoRA) and what happens
after it (merging the ReinforceLoRA). The training loop itself is the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnr.registry import Registry


@dataclass(frozen=True)
class Defense:
    """`uses_buffer`: train the UserLoRA with the BufferLoRA attached frozen.
    `merge_reinforce`: the deliverable is the UserLoRA QR-merged with the ReinforceLoRA."""

    name: str
    uses_buffer: bool
    merge_reinforce: bool
    doc: str


DEFENSES: Registry[Defense] = Registry("defense")

for _d in (
    Defense("none", False, False, "plain LoRA SFT on the user's data (the undefended baseline)"),
    Defense("sft", False, False, "alias of none"),
    Defense("buffer-only", True, False, "UserLoRA trained with the buffer frozen; buffer dropped, no ReinforceLoRA"),
    Defense(
        "reinforce-only", False, True, "ablation: plain SFT UserLoRA QR-merged with the ReinforceLoRA (no buffer)"
    ),
    Defense("bnr", True, True, "Buffer-and-Reinforce: buffer frozen during training, then QR merge of ReinforceLoRA"),
):
    DEFENSES.add(_d.name, _d, _d.doc)
