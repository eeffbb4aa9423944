"""`sft` (alias `none`): plain LoRA fine-tuning on the user's data, the undefended baseline.

Every hook keeps the base class default: the user's mix unchanged, a fresh UserLoRA on the plain base,
masked cross-entropy, and the UserLoRA run is the deliverable. Source: the paper's SFT baseline
(Ham et al., arXiv 2605.24550; repository SeokilHam/Buffer-and-Reinforce, the Booster lineage's `sft`
mode). No deviation.
"""

from __future__ import annotations

from bnr.defenses.base import Defense, register


@register
class Sft(Defense):
    """plain LoRA SFT on the user's data (the undefended baseline)"""

    name = "sft"
    title = "SFT (no defense)"
    aliases = ("none",)
