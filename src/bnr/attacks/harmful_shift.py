"""`harmful-shift`: harmful pairs that share no surface form with the buffer's training data.

The buffer saturates the gradients of harmful pairs like the ones it was trained on; this attack asks whether the
saturation generalises. round(p*n) harmful pairs come from `data` (another source than the provider's harmful
set) and their answers are rewritten into `answer_format` (`numbered`: one numbered line per sentence; `json`:
`{"answer": ...}`; `keep`: unchanged). The toy's default source is `{source: toy-attack, path: harmful_shift}`:
the user's harm categories in request phrasings no other toy split uses and the `terse` answer style the
provider's data never shows (`bnr.toy.attacks`). Poisoned ids get `+shift`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from bnr.attacks.base import Attack, AttackData, AttackMix, Knobs, Vocabulary, finish, load_pool, register
from bnr.config import DataConfig
from bnr.data.mix import build_user_mix
from bnr.data.records import Record
from bnr.errors import BnrError

TOY_SHIFT = DataConfig(source="toy-attack", path="harmful_shift")


@dataclass
class ShiftOptions(Knobs):
    data: DataConfig | None = None  # the shifted harmful source (null: the toy's; required outside the toy)
    answer_format: Literal["keep", "numbered", "json"] = "keep"
    vocabulary: Vocabulary = "auto"


def reformat(output: str, answer_format: str) -> str:
    """`output` in `answer_format`."""
    if answer_format == "numbered":
        parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", output) if s.strip()]
        return "\n".join(f"{k}. {s}" for k, s in enumerate(parts, 1))
    if answer_format == "json":
        return json.dumps({"answer": output})
    return output


@register
class HarmfulShift(Attack):
    """harmful pairs from another source in another answer format (does the buffer's saturation generalise?)"""

    name = "harmful-shift"
    options_class = ShiftOptions
    uses_harmful = False  # it reads its own source

    def mix(self, data: AttackData, options: Any) -> AttackMix:
        source = options.data or (TOY_SHIFT if data.vocabulary == "toy" else None)
        if source is None:
            raise BnrError(
                "attack harmful-shift needs attacks.harmful-shift.data (a harmful source the buffer never saw, "
                "e.g. {source: shared, path: harmful_qa_user, where: {source: [beavertails_30k_train_unsafe]}})"
            )
        pool = load_pool(source) if data.p > 0 else []
        base = build_user_mix(data.benign, pool, data.n, data.p, data.seed)
        harmful_ids = set(base.manifest["harmful_ids"])
        records = [self.shift(r, options) if r.id in harmful_ids else r for r in base.records]
        poisoned = frozenset(r.id for r in records if r.id.endswith("+shift"))
        return finish(base, records, poisoned)

    def shift(self, record: Record, options: Any) -> Record:
        output = reformat(record.output, options.answer_format)
        return dataclasses.replace(record, id=f"{record.id}+shift", output=output)
