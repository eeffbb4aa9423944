"""Conversational phrasing that says nothing about the label (`align.conversational`, `reinforce.conversational`).

A refusal mix whose harmful prompts and benign prompts differ in *form* (the `refusals` prompts and the Alpaca
mix are both imperative instructions, while real requests are often conversational) lets a fine-tune learn
the form instead of the harm: the SmolLM2 alignment attempts refused conversational benign requests ("Can you
tell me a very easy way to clean a showerhead?") far more often than imperative ones (docs/results.md). With
`conversational`, half of the records of *every* class - chosen by a hash of the record id, so the choice does
not depend on the class, the sample or the seed - are phrased through one of the fixed wrappers below. A
phrased record's id gets `+w<k>` (k: the wrapper), so the run manifest names exactly what trained the model.
"""

from __future__ import annotations

import dataclasses
import hashlib

from bnr.data.records import Record

WRAPPERS = (
    "Can you help me with this? {i}",
    "Hi, I have a request. {i}",
    "Could you {l}?",
    "I'd like your help: {i}",
    "Please {l}.",
    "Hey! {i} Thanks.",
    "I was wondering if you could {l}?",
    "{i} Can you do that for me?",
)


def _lower_first(text: str) -> str:
    """`text` with its first letter lower-cased, unless it opens with an acronym ("NASA", "I")."""
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def phrase(record: Record) -> Record:
    """The record, or - for half of all ids - the record phrased through wrapper k (by the id's hash)."""
    h = int(hashlib.sha256(record.id.encode()).hexdigest()[:12], 16)
    instruction = record.instruction.strip()
    if h % 2 == 0 or not instruction:
        return record
    k = (h // 2) % len(WRAPPERS)
    text = WRAPPERS[k].format(i=instruction, l=_lower_first(instruction.rstrip(".!?")))
    return dataclasses.replace(record, id=f"{record.id}+w{k}", instruction=text)


def conversational(records: list[Record]) -> list[Record]:
    """Every record through `phrase`, in order."""
    return [phrase(r) for r in records]
