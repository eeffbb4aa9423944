from __future__ import annotations

from bnr.data.phrasing import WRAPPERS, conversational, phrase
from bnr.data.records import Record


def _records(label: str, n: int = 400) -> list[Record]:
    return [Record(id=f"r{i}", instruction=f"Describe topic number {i}.", output="x", label=label) for i in range(n)]


def test_phrasing_depends_on_the_id_only_so_it_says_nothing_about_the_label() -> None:
    harmful, benign = conversational(_records("refusal")), conversational(_records("benign"))
    assert [r.instruction for r in harmful] == [r.instruction for r in benign]  # same ids, same phrasing
    phrased = [r for r in harmful if "+w" in r.id]
    assert 0.4 < len(phrased) / len(harmful) < 0.6  # about half, by the id hash
    assert {int(r.id.split("+w")[1]) for r in phrased} == set(range(len(WRAPPERS)))  # every wrapper is used
    for before, after in zip(_records("refusal"), harmful, strict=True):
        if after == before:
            continue
        assert after.id.startswith(before.id + "+w") and after.output == before.output
        assert after.instruction != before.instruction
        assert "topic number" in after.instruction  # the request itself is kept, only its form changes
    assert conversational(_records("refusal")) == harmful  # deterministic


def test_phrasing_keeps_empty_instructions_and_acronyms() -> None:
    empty = Record(id="r1", instruction="  ", output="x")
    assert phrase(empty) is empty
    lowered = {phrase(Record(id=f"n{i}", instruction="NASA launched what?")).instruction for i in range(64)}
    assert not any("nASA" in t or "nasa" in t for t in lowered)


def test_conversational_stage_phrases_every_class(tiny_data) -> None:
    from bnr.config import load_config
    from bnr.runs.fit import load_lookalikes, load_refusal_mix

    over = [
        f"reinforce.refusal_data.path={tiny_data['refusal']}",
        f"reinforce.benign_data.path={tiny_data['benign']}",
        "reinforce.lookalike_data.source=file",
        f"reinforce.lookalike_data.path={tiny_data['benign']}",
    ]
    plain = load_config(None, over)
    phrased = load_config(None, [*over, "reinforce.conversational=true"])
    for load in (lambda c: load_refusal_mix(c.reinforce, 1, "r"), lambda c: (load_lookalikes(c.reinforce, 1, "r"),)):
        for a, b in zip(load(plain), load(phrased), strict=True):
            assert [phrase(r) for r in a] == b  # the same sample, then phrased
            assert any(x != y for x, y in zip(a, b, strict=True))
