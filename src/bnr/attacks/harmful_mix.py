"""`harmful-mix`: the field's fixed attacker and bnr's reference row - round(p*n) harmful pairs (the user section's
harmful pool) among n - round(p*n) benign ones, drawn without replacement and shuffled with the run seed
(`bnr.data.mix.build_user_mix`, exactly the mix every run had before attacks were pluggable). Source: the
Booster / Vaccine lineage's `train_merged_n1000_p*` mixes, which the paper follows.
"""

from __future__ import annotations

from bnr.attacks.base import Attack, register


@register
class HarmfulMix(Attack):
    """round(p*n) harmful pairs among benign ones, unchanged (the reference row)"""

    name = "harmful-mix"
