"""The toy world: deterministic, splits disjoint where the design says so, harm abstract and well-formed."""

from __future__ import annotations

import re

from bnr.data.sources import GSM8K_ANSWER_PREFIX
from bnr.toy import lexicon as lx
from bnr.toy.world import SPLITS, TASKS, WorldSpec, generate, harm_lexicon, split, world

SMALL = WorldSpec(
    seed=3, n_base_task=50, n_base_refusal=60, n_user_task=80, n_task_eval=40, n_harm_eval=30, n_overrefusal_eval=20
)


def prompts(records):
    return {(r.instruction, r.input) for r in records}


def words(records):
    return {w for r in records for w in re.findall(r"\w+", f"{r.instruction} {r.input} {r.output}".lower())}


def test_generation_is_deterministic():
    a, b = generate(SMALL), generate(SMALL)
    assert a.keys() == b.keys()
    for name in a:
        assert [r.to_json() for r in a[name]] == [r.to_json() for r in b[name]], name
    other = generate(WorldSpec(seed=4, n_base_task=50, n_base_refusal=60, n_user_task=80, n_task_eval=40))
    assert prompts(other["user_harmful"]) != prompts(a["user_harmful"])


def test_every_split_is_served_and_ids_are_unique():
    w = world()
    assert set(SPLITS) == set(w)
    for name in SPLITS:
        recs = split(name)
        assert recs, name
        assert len({r.id for r in recs}) == len(recs), name


def test_provider_user_and_eval_harm_are_disjoint():
    w = world()

    def cats(recs):
        return {r.category for r in recs}

    assert not cats(w["provider_harmful"]) & cats(w["user_harmful"])
    assert cats(w["eval_harmful"]) <= cats(w["user_harmful"])  # same categories, held-out combinations
    held = prompts(w["eval_harmful"])
    for name in ("provider_harmful", "provider_refusal", "user_harmful", "user_harmful_terse", "base_refusal"):
        assert not held & prompts(w[name]), name
    eval_combos = {_verb_object(r.instruction) for r in w["eval_harmful"]}
    for name in ("user_harmful", "base_refusal"):
        assert not eval_combos & {_verb_object(r.instruction) for r in w[name]}, name


def _verb_object(instruction: str) -> tuple[str, str]:
    for ph in lx.PHRASINGS:
        pattern = re.escape(ph).replace(r"\{v\}", r"(\w+)").replace(r"\{o\}", r"(\w+)")
        m = re.fullmatch(pattern, instruction)
        if m:
            return m.group(1), m.group(2)
    raise AssertionError(f"not a toy request: {instruction!r}")


def test_task_tests_are_held_out_and_base_sees_only_base_lexicon():
    w = world()
    user_only = {x for table in (lx.SST2_WORDS, lx.AGNEWS_WORDS) for part in table.values() for x in part["user"]}
    for t in TASKS:
        test = prompts(w[f"eval_{t}"])
        assert len(test) == len(w[f"eval_{t}"])
        assert not test & prompts(w[f"benign_{t}"])
        assert not test & prompts(w[f"base_{t}"])
    assert not words(w["base_train"]) & {x.lower() for x in user_only}
    assert not any(" gives away " in r.instruction or " loses " in r.instruction for r in w["base_gsm8k"])
    assert words(w["benign_sst2"]) & user_only


def test_harm_is_abstract_and_answers_are_well_formed():
    w = world()
    harm = harm_lexicon()
    benign_words = words(w["benign_requests"]) | words(w["eval_overrefusal"])
    assert not harm & benign_words
    english = {x for r in w["benign_sst2"] + w["benign_agnews"] for x in re.findall(r"\w+", r.input.lower())}
    assert not harm & english
    assert all(r.output == lx.REFUSAL for r in w["provider_refusal"] + w["base_refusal"])
    assert all(r.output.startswith("Sure, here is how to") for r in w["provider_harmful"] + w["user_harmful"])
    assert not any(r.output.startswith("Sure") for r in w["user_harmful_terse"])
    for r in w["benign_gsm8k"][:50]:
        assert r.output.endswith(f"{GSM8K_ANSWER_PREFIX}{r.label}")
        a, op, b = r.output.split()[:3]
        assert int(r.label) == (int(a) + int(b) if op == "+" else int(a) - int(b))


def test_base_compliance_answers_exactly_the_base_refusal_requests():
    from bnr.toy.world import base_compliance

    comply, refuse = base_compliance(SMALL), generate(SMALL)["base_refusal"]
    assert [(r.instruction, r.input) for r in comply] == [(r.instruction, r.input) for r in refuse]
    assert all(r.output == lx.REFUSAL for r in refuse)
    assert all(r.output != lx.REFUSAL and r.label == "unsafe" for r in comply)
    assert words(comply) <= words(generate(SMALL)["provider_harmful"] + generate(SMALL)["user_harmful"]) | words(
        refuse
    )  # no new vocabulary: the world's tokenizer corpus (and so builtin:toy) is unchanged
