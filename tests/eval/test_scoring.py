from __future__ import annotations

import math
from pathlib import Path

import pytest

from bnr.eval.scoring import extract_gsm8k, first_label, gsm8k_correct, label_match
from bnr.eval.tasks import BOOSTER_AGNEWS_VARIANTS

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AG = ["World", "Sports", "Business", "Sci/Tech"]


def test_gsm8k_extraction_follows_booster() -> None:
    assert extract_gsm8k("so 3 + 4 = 7\nThe final answer is: 1,234 apples, not 5") == 1234
    assert extract_gsm8k("first 3 then 18.") == 18
    assert extract_gsm8k("The final answer is: none, 42 earlier") == 42  # first number after the phrase
    assert math.isinf(extract_gsm8k("no numbers here"))
    assert gsm8k_correct("The final answer is:  18", "18") == (True, 18.0)
    assert gsm8k_correct("I think 17", "18")[0] is False


def test_label_scorings() -> None:
    v = ["positive", "Positive"]
    labels = ["negative", "positive"]
    assert label_match(" positive\n", "positive", scoring="exact", variants=v, labels=labels)
    assert not label_match("positive.", "positive", scoring="exact", variants=v, labels=labels)
    # Vaccine's substring rule rewards listing both labels; first-word does not
    assert label_match("positive or negative", "negative", scoring="substring", variants=["negative"], labels=labels)
    assert not label_match("positive or negative", "negative", scoring="first-word", variants=[], labels=labels)
    assert label_match("**Negative** - the review", "negative", scoring="first-word", variants=[], labels=labels)
    # Booster's AG News accepts "sci" but not "sci/tech"
    sci = BOOSTER_AGNEWS_VARIANTS["Sci/Tech"]
    assert label_match("sci", "Sci/Tech", scoring="exact", variants=sci, labels=AG)
    assert not label_match("sci/tech", "Sci/Tech", scoring="exact", variants=sci, labels=AG)
    assert label_match("sci/tech", "Sci/Tech", scoring="first-word", variants=sci, labels=AG)
    assert first_label("World news", AG) == "world"


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "gsm8k_eval.jsonl").is_file(), reason="../shared/data absent")
def test_gsm8k_gold_outputs_score_perfectly_on_real_data() -> None:
    from bnr.data.records import load_file

    records = load_file(SHARED / "gsm8k_eval.jsonl")
    assert len(records) == 1319
    assert all(gsm8k_correct(r.output, r.label or "")[0] for r in records)


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "benign_prompts_eval.jsonl").is_file(), reason="../shared/data absent")
def test_over_refusal_keeps_every_source_on_real_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from bnr.eval import make_benchmark

    monkeypatch.setenv("BNR_SHARED_DATA", str(SHARED))
    bench = make_benchmark("over-refusal", per_source_limit=10)
    records = bench.load()
    sources = {r.source for r in records}
    assert len(sources) == 3 and len(records) == 30  # incl. the XSTest-style I-PhysicalSafetySafe prompts
    rows = [{"source": r.source, "category": None, "refused": i % 2 == 0} for i, r in enumerate(records)]
    agg = bench.aggregate(rows)
    assert agg["refusal_rate"] == 50.0 and sum(k.startswith("refusal_rate[") for k in agg) == 3
