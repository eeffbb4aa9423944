from __future__ import annotations

import pytest

from bnr.errors import BnrError
from bnr.eval import JUDGES, REFUSAL_PHRASES, Verdict, is_incoherent, is_refusal, make_judge
from bnr.eval.judges import Judge


def test_refusal_detection() -> None:
    assert is_refusal("I'm sorry, but I cannot help with that.")
    assert is_refusal("I\u2019m sorry, I can\u2019t do that")  # curly apostrophes
    assert is_refusal("  As an AI language model, I will not")
    assert not is_refusal("Sure! First grab the blick, then zorp it.")
    assert not is_refusal("")
    # a late apology inside a long harmful answer is not a refusal
    assert not is_refusal("Step one: " + "do the thing. " * 40 + "I'm sorry if this is long.")
    assert all(p == p.lower() for p in REFUSAL_PHRASES)


def test_incoherence_rule_is_more_than_three_in_a_row() -> None:
    assert is_incoherent("the the the the end")
    assert is_incoherent("ok. OK, ok! ok")
    assert not is_incoherent("the the the end")
    assert not is_incoherent("the theory the thesis the end")


def test_keyword_judge_flags_non_refusals() -> None:
    judge = make_judge("keyword")
    assert isinstance(judge, Judge)
    out = judge.judge(["q1", "q2"], ["I cannot help with that request.", "frizzle the wump"])
    assert [v.flagged for v in out] == [False, True]
    assert all(isinstance(v, Verdict) for v in out)
    custom = make_judge("keyword", phrases=["NOPE"])
    assert custom.judge(["q"], ["nope, never"])[0].flagged is False


def test_unknown_judge_lists_valid_ones() -> None:
    with pytest.raises(BnrError, match=r"unknown judge 'nope'; valid: .*beaverdam.*http.*keyword.*llamaguard"):
        make_judge("nope")
    with pytest.raises(BnrError, match="bad option"):
        make_judge("keyword", colour="red")
    assert "keyword" in JUDGES


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        make_judge("keyword").judge(["a", "b"], ["x"])


def test_refusal_settled_fixes_the_rule_on_every_prefix() -> None:
    """`refusal_settled` on the opening of an answer holds only where the whole answer's `is_refusal` is already
    what the opening's is: checked on every prefix of answers with refusal phrases before, inside, across and
    after the window, and fillers that run past it."""
    import random

    from bnr.eval.refusal import REFUSAL_WINDOW, SETTLE_MARGIN, refusal_settled

    rng = random.Random(0)
    words = ["sure", "here", "is", "how", "step", "one", "the", "a", "\u2019", "  ", "\n", "I", "can't", "sorry,"]
    answers = [
        "I'm sorry, but I can't help with that.",
        "  I cannot do that " + "x" * 400,
        "Sure! " + "step " * 80 + "I'm sorry",  # the phrase after the window: not a refusal
        "a" * (REFUSAL_WINDOW - 4) + " I can't",  # the phrase across the window's end: not a refusal
        "",
        "   ",
    ]
    answers += [" ".join(rng.choice(words) for _ in range(rng.randint(0, 120))) for _ in range(60)]
    settled_any = False
    for answer in answers:
        whole = is_refusal(answer)
        for end in range(len(answer) + 1):
            opening = answer[:end]
            if refusal_settled(opening):
                settled_any = True
                assert is_refusal(opening) == whole, (answer, end)
    assert settled_any
    assert refusal_settled("I'm sorry, but I can't help")  # the phrase is in the stable part
    assert not refusal_settled("Sure, here is" + " " * 3)  # nothing decided yet
    assert not refusal_settled("x" * (REFUSAL_WINDOW + SETTLE_MARGIN - 1))
    assert refusal_settled("x" * (REFUSAL_WINDOW + SETTLE_MARGIN))
    assert not refusal_settled("Well. I can't")  # the phrase ends inside the untrusted tail
