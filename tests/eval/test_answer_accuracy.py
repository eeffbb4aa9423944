"""`AnswerAccuracy`: FA on labelled records a caller holds (the service's validation file), scored against each
record's label, else its answer."""

from __future__ import annotations

import pytest

from bnr.data.records import Record
from bnr.errors import BnrError
from bnr.eval.tasks import AnswerAccuracy, answer_of


def _rec(i: int, output: str, label: str | None = None) -> Record:
    return Record(id=str(i), instruction=f"q{i}", output=output, label=label)


def test_first_word_scoring_against_the_answer_or_the_label() -> None:
    records = [_rec(0, "positive"), _rec(1, "negative"), _rec(2, "The answer is 7.", label="7"), _rec(3, "Paris")]
    assert [answer_of(r) for r in records] == ["positive", "negative", "7", "Paris"]
    bench = AnswerAccuracy(records=records)
    rows = bench.score(records, ["Positive!", "positive", "7 apples", "paris, France"])
    assert [r["correct"] for r in rows] == [True, False, True, True]
    assert bench.aggregate(rows) == {"accuracy": 75.0}
    exact = AnswerAccuracy(records=records, scoring="exact")
    assert [r["correct"] for r in exact.score(records, ["positive", " negative ", "7", "Paris."])] == [
        True,
        True,
        True,
        False,
    ]
    assert len(AnswerAccuracy(records=records, limit=2).load()) == 2


def test_a_record_without_a_gold_or_an_unknown_scoring_is_one_clear_error() -> None:
    with pytest.raises(BnrError, match=r"valid\.jsonl:3: has no label or answer"):
        AnswerAccuracy(records=[Record(id="x", instruction="q", origin="valid.jsonl:3")])
    with pytest.raises(BnrError, match="unknown scoring 'fuzzy'"):
        AnswerAccuracy(records=[_rec(0, "a")], scoring="fuzzy")  # type: ignore[arg-type]
