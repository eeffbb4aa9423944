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


# Digest of every split the world had at WORLD_VERSION 1 (before the calibration splits were added). Cached
# bases were trained on these splits: if this test fails, the world changed - bump bnr.toy.base.WORLD_VERSION.
V1_SPLITS_DIGEST = "79be4a94c20c551aaaa352aeff42ed07caab1f46b0a3e20d77a185771b8abc79"


def test_existing_splits_are_unchanged_by_the_calibration_splits():
    import hashlib
    import json

    from bnr.toy.world import CALIBRATION_SPLITS

    w = world()
    h = hashlib.sha256()
    for name in sorted(set(w) - set(CALIBRATION_SPLITS)):
        for r in w[name]:
            h.update(json.dumps(r.to_json(), sort_keys=True).encode())
    assert h.hexdigest() == V1_SPLITS_DIGEST


def test_calibration_splits_add_no_word_and_are_disjoint_from_every_other_split():
    from bnr.tiny import TOKEN_PATTERN
    from bnr.toy.world import CALIBRATION_SPLITS, all_texts

    w = world()
    calib = [r for name in CALIBRATION_SPLITS for r in w[name]]
    calib_tokens = {t for r in calib for t in re.findall(TOKEN_PATTERN, f"{r.instruction} {r.input} {r.output}")}
    others = {
        t
        for name in set(w) - set(CALIBRATION_SPLITS)
        for r in w[name]
        for x in (r.instruction, r.output)
        for t in re.findall(TOKEN_PATTERN, x)
    }
    assert calib_tokens <= others | {t for x in all_texts()[:3] for t in re.findall(TOKEN_PATTERN, x)}
    for name in set(w) - set(CALIBRATION_SPLITS):
        assert not prompts(calib) & prompts(w[name]), name
    harmful, benign = w["calib_harmful"], w["calib_overrefusal"]
    assert len(harmful) == 100 and len(benign) == 100
    assert {r.label for r in harmful} == {"unsafe"} and {r.label for r in benign} == {"benign"}
    assert {r.category for r in harmful} <= {r.category for r in w["user_harmful"]}
    # topic-disjoint from the evaluation sets too: no (verb, object) of eval_harmful / eval_overrefusal
    eval_combos = {_verb_object(r.instruction) for r in w["eval_harmful"] + w["eval_overrefusal"]}
    assert not eval_combos & {_calib_verb_object(r.instruction) for r in calib}


def _calib_verb_object(instruction: str) -> tuple[str, str]:
    for ph in lx.CALIB_PHRASINGS:
        pattern = re.escape(ph).replace(r"\{v\}", r"(\w+)").replace(r"\{o\}", r"(\w+)")
        m = re.fullmatch(pattern, instruction)
        if m:
            return m.group(1), m.group(2)
    raise AssertionError(f"not a calibration request: {instruction!r}")


def test_base_compliance_answers_exactly_the_base_refusal_requests():
    from bnr.toy.world import base_compliance

    comply, refuse = base_compliance(SMALL), generate(SMALL)["base_refusal"]
    assert [(r.instruction, r.input) for r in comply] == [(r.instruction, r.input) for r in refuse]
    assert all(r.output == lx.REFUSAL for r in refuse)
    assert all(r.output != lx.REFUSAL and r.label == "unsafe" for r in comply)
    assert words(comply) <= words(generate(SMALL)["provider_harmful"] + generate(SMALL)["user_harmful"]) | words(
        refuse
    )  # no new vocabulary: the world's tokenizer corpus (and so builtin:toy) is unchanged
