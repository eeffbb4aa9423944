"""`benign-only`: n benign records and no harmful row, whatever `user.p` says (p is recorded, not used).

Pure benign fine-tuning also erodes safety (Qi et al., 'Fine-tuning Aligned Language Models Compromises Safety,
Even When Users Do Not Intend To!', ICLR 2024, risk level 3); this row measures the defense against the erosion
nobody intended. Draws like `harmful-mix` at p = 0 (same seed, same benign rows).
"""

from __future__ import annotations

from typing import Any

from bnr.attacks.base import Attack, AttackData, AttackMix, finish, register
from bnr.data.mix import build_user_mix


@register
class BenignOnly(Attack):
    """n benign records, no harmful row (p is ignored): the unintended erosion"""

    name = "benign-only"
    uses_harmful = False

    def mix(self, data: AttackData, options: Any) -> AttackMix:
        base = build_user_mix(data.benign, [], data.n, 0.0, data.seed)
        return finish(base, list(base.records), frozenset(), p_ignored=data.p)
