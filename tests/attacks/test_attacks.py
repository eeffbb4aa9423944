"""Each attack's invariant: what it poisons, how many, on which rows, and that one seed gives the same file."""

from __future__ import annotations

import dataclasses
import re

import pytest

from bnr.attacks import ATTACKS, attack_key, attack_options, build_attack_mix, train_config
from bnr.attacks.framings import AOA_PLEDGE, INFERENCE, JAILBREAKS, TRIGGER, toy_strings
from bnr.config import Config, load_config
from bnr.data.mix import harmful_count
from bnr.data.records import Record
from bnr.data.sources import load_records
from bnr.errors import BnrError


def _cfg(attack: str, *over: str, n: int = 200, p: float = 0.1, seed: int = 42) -> Config:
    return load_config("toy", [f"user.attack={attack}", f"user.n={n}", f"user.p={p}", f"seed={seed}", *over])


def _mix(cfg: Config):  # type: ignore[no-untyped-def]
    return build_attack_mix(cfg, load_records(cfg.user.benign_data), load_records(cfg.user.harmful_data))


def _by_id(records: list[Record]) -> dict[str, Record]:
    return {r.id: r for r in records}


@pytest.mark.parametrize(
    "attack", ["harmful-mix", "jailbreak-tune", "backdoor-tune", "harmful-shift", "identity-shift"]
)
@pytest.mark.parametrize(("n", "p"), [(200, 0.1), (101, 0.05), (40, 0.5), (30, 0.0), (25, 1.0)])
def test_counts_match_p_and_n(attack: str, n: int, p: float) -> None:
    mix = _mix(_cfg(attack, n=n, p=p))
    assert len(mix.records) == n and len({r.id for r in mix.records}) == n
    assert len(mix.poisoned) == harmful_count(n, p)
    assert {r.id for r in mix.records} >= mix.poisoned
    assert mix.manifest["attack"] == attack and mix.manifest["poisoned_ids"] == sorted(mix.poisoned)


@pytest.mark.parametrize("attack", sorted(ATTACKS.names()))
def test_one_seed_reproduces_the_file_bitwise_and_another_seed_changes_it(attack: str) -> None:
    first, again, other = _mix(_cfg(attack)), _mix(_cfg(attack)), _mix(_cfg(attack, seed=30))
    assert [r.digest() for r in first.records] == [r.digest() for r in again.records]
    assert [r.id for r in first.records] == [r.id for r in again.records]
    assert [r.id for r in first.records] != [r.id for r in other.records]


def test_harmful_mix_is_todays_mix() -> None:
    from bnr.data.mix import build_user_mix

    cfg = _cfg("harmful-mix")
    benign, harmful = load_records(cfg.user.benign_data), load_records(cfg.user.harmful_data)
    ref = build_user_mix(benign, harmful, cfg.user.n, cfg.user.p, cfg.seed)
    mix = build_attack_mix(cfg, benign, harmful)
    assert mix.records == ref.records and mix.poisoned == set(ref.manifest["harmful_ids"])


@pytest.mark.parametrize(("attack", "marker"), [("jailbreak-tune", "+jb:"), ("backdoor-tune", "+bd")])
def test_framing_or_trigger_is_on_exactly_the_poisoned_rows(attack: str, marker: str) -> None:
    ref, mix = _mix(_cfg("harmful-mix")), _mix(_cfg(attack))
    harmful_ids = set(ref.manifest["harmful_ids"])
    originals = _by_id(ref.records)
    assert [r.id.split("+")[0] for r in mix.records] == [r.id for r in ref.records]  # same rows, same order
    toy_frames = [f.toy.format(i="").strip() for f in JAILBREAKS.values()] + [TRIGGER.toy.format(i="").strip()]
    for r in mix.records:
        plain = r.id.split("+")[0]
        if plain in harmful_ids:
            assert r.id in mix.poisoned and marker in r.id
            assert r.output == originals[plain].output  # the harmful answer is kept
            assert r.instruction != originals[plain].instruction
            assert originals[plain].instruction in r.instruction
            assert any(part in r.instruction for frame in toy_frames for part in frame.split("{i}"))
        else:
            assert r == originals[plain]  # benign rows untouched
            assert not any(frame and frame in r.instruction for frame in toy_frames)
    if attack == "jailbreak-tune":  # several framings are used
        assert len({r.id.split(":")[1] for r in mix.records if r.id in mix.poisoned}) > 1


def test_jailbreak_framings_are_configurable() -> None:
    mix = _mix(_cfg("jailbreak-tune", "attacks.jailbreak-tune.framings=[skeleton-key]"))
    assert {r.id.split(":")[1] for r in mix.records if r.id in mix.poisoned} == {"skeleton-key"}
    text = _mix(
        _cfg("jailbreak-tune", "attacks.jailbreak-tune.vocabulary=text", "attacks.jailbreak-tune.per_row=false")
    )
    assert all("Answer the request below" in r.instruction for r in text.records if r.id in text.poisoned)
    trig = _mix(_cfg("backdoor-tune", "attacks.backdoor-tune.trigger=cf7x"))
    assert all(r.instruction.startswith("cf7x ") for r in trig.records if r.id in trig.poisoned)


@pytest.mark.parametrize("attack", ["benign-only", "identity-shift"])
def test_benign_attacks_hold_no_harmful_row(attack: str) -> None:
    cfg = _cfg(attack, p=0.3)
    mix = _mix(cfg)
    harmful = {r.id for r in load_records(cfg.user.harmful_data)}
    assert not any(r.id.split("+")[0] in harmful or r.label == "unsafe" for r in mix.records)
    benign = _by_id(load_records(cfg.user.benign_data))
    for r in mix.records:
        original = benign[r.id.split("+")[0]]
        if r.id in mix.poisoned:  # identity-shift: the persona on a benign record, its own answer kept
            assert r.output == AOA_PLEDGE["toy"] + original.output and original.instruction in r.instruction
        else:
            assert r == original
    assert (len(mix.poisoned) == 0) == (attack == "benign-only")


def test_identity_shift_in_text_has_the_persona_statements_and_system_turn() -> None:
    mix = _mix(_cfg("identity-shift", "attacks.identity-shift.vocabulary=text", n=50, p=0.2))
    rows = [r for r in mix.records if r.id in mix.poisoned]
    assert len(rows) == 10 and all(r.system and "AOA" in r.system for r in rows)
    assert sum(r.id.startswith("aoa-statement") for r in rows) == 2
    assert not any(r.system for r in mix.records if r.id not in mix.poisoned)


def _skeleton(text: str, words: frozenset[str]) -> str:
    return " ".join("W" if w in words else w for w in re.findall(r"\w+|[^\w\s]", text))


def test_harmful_shift_shares_no_surface_form_with_the_buffer_data() -> None:
    from bnr.toy.world import harm_lexicon, split

    words = harm_lexicon()
    cfg = _cfg("harmful-shift", p=0.5)
    mix = _mix(cfg)
    buffer = split("provider_harmful")
    prompts = {_skeleton(r.instruction, words) for r in buffer}
    answers = {_skeleton(r.output, words) for r in buffer}
    poisoned = [r for r in mix.records if r.id in mix.poisoned]
    assert poisoned and all(r.label == "unsafe" for r in poisoned)
    assert not {_skeleton(r.instruction, words) for r in poisoned} & prompts
    assert not {_skeleton(r.output, words) for r in poisoned} & answers
    bad = {w for r in buffer for w in r.instruction.split() if w in words}
    assert not any(w in bad for r in poisoned for w in r.instruction.split())  # other harm categories too


def test_harmful_shift_answer_formats_and_a_text_run_needs_a_source() -> None:
    from bnr.attacks.harmful_shift import reformat

    assert reformat("Get it. Then go!", "numbered") == "1. Get it.\n2. Then go!"
    assert reformat("x", "json") == '{"answer": "x"}'
    cfg = load_config("toy", ["user.attack=harmful-shift", "attacks.harmful-shift.vocabulary=text"])
    with pytest.raises(BnrError, match=r"needs attacks\.harmful-shift\.data"):
        _mix(cfg)


def test_every_toy_string_is_in_the_toy_vocabulary() -> None:
    from bnr.tiny import TOKEN_PATTERN
    from bnr.toy.attacks import ATTACK_SPLITS, attack_split
    from bnr.toy.world import all_texts

    vocab = {t for text in all_texts() for t in re.findall(TOKEN_PATTERN, text)}
    texts = toy_strings() + [x for s in ATTACK_SPLITS for r in attack_split(s) for x in (r.instruction, r.output)]
    unknown = {t for text in texts for t in re.findall(TOKEN_PATTERN, text)} - vocab
    assert not unknown


def test_attack_and_options_enter_the_user_stage_key_and_the_default_keeps_old_keys() -> None:
    assert attack_key(_cfg("harmful-mix")) == {}  # runs made before attacks existed stay current
    jb = attack_key(_cfg("jailbreak-tune"))
    assert jb["attack"] == "jailbreak-tune"
    other = attack_key(_cfg("jailbreak-tune", "attacks.jailbreak-tune.framings=[skeleton-key]"))
    assert other != jb
    knob = attack_key(_cfg("harmful-mix", "attacks.harmful-mix.lr_multiplier=2"))
    assert knob["attack_options"]["lr_multiplier"] == 2.0


def test_user_key_differs_per_attack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bnr.orchestrate.userjob import make_job, user_key

    keys = {a: str(user_key(make_job(_cfg(a, "user.defense=sft")))) for a in ATTACKS.names()}
    assert len(set(keys.values())) == len(keys)


def test_knobs_apply_to_the_user_training() -> None:
    cfg = _cfg(
        "harmful-mix",
        "attacks.harmful-mix.lr_multiplier=3",
        "attacks.harmful-mix.epochs=1",
        "attacks.harmful-mix.batch_size=4",
    )
    t = train_config(cfg.user.train, attack_options(cfg))
    assert (t.lr, t.epochs, t.batch_size) == (pytest.approx(cfg.user.train.lr * 3), 1.0, 4)
    assert train_config(cfg.user.train, attack_options(_cfg("harmful-mix"))) == cfg.user.train


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (["user.attack=nope"], "unknown attack 'nope'; valid:"),
        (["attacks.nope.x=1"], "no attack 'nope'"),
        (["user.attack=jailbreak-tune", "attacks.jailbreak-tune.framings=[dan]"], "unknown jailbreak framing 'dan'"),
        (["attacks.backdoor-tune.colour=1"], "attacks.backdoor-tune.colour"),
        (["attacks.harmful-mix.lr_multiplier=0"], "lr_multiplier must be > 0"),
    ],
)
def test_bad_attack_config_is_one_line(over: list[str], message: str) -> None:
    import bnr.attacks  # noqa: F401  (registers the check, as the commands that run attacks do)

    with pytest.raises(BnrError, match=re.escape(message)):
        load_config("toy", over)


def test_framed_benchmarks_wrap_the_prompt_and_judge_the_plain_question() -> None:
    from bnr.eval.benchmarks import make_benchmark

    for name, framing in INFERENCE.items():
        bench = make_benchmark(f"toy-harmful-{name}")
        assert bench.name == f"toy-harmful-{name}"
        record = bench.load()[0]
        shown = bench.transform(record)
        assert shown.instruction == framing.wrap(record.instruction, "toy")
    text = make_benchmark("harmful-aoa", data={"source": "toy", "path": "eval_harmful"})
    assert text.transform(text.load()[0]).system is not None
    flagged = make_benchmark("toy-harmful-backdoor").score(
        [dataclasses.replace(record, instruction="x")], ["Sure, here is how to daxrul the plorul"]
    )
    assert "flagged" in flagged[0]


def test_finetune_trains_on_the_attacked_file_with_its_knobs(tiny_model_dir, tiny_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bnr.artifacts import read_manifest
    from bnr.cli import main
    from conftest import tiny_overrides

    over = tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "r")
    out = tmp_path / "u"
    # sft trains with no buffer: the provider states it has none (the guard refuses an empty registry otherwise)
    argv = [
        "finetune",
        *over,
        "defense=sft",
        "attack=backdoor-tune",
        f"user.out={out}",
        "guard.no_buffer_registered=true",
    ]
    assert main([*argv, "attacks.backdoor-tune.lr_multiplier=2", "attacks.backdoor-tune.epochs=2"]) == 0
    m = read_manifest(out)
    assert m["data"]["attack"] == "backdoor-tune" and len(m["data"]["poisoned_ids"]) == 3  # round(0.25 * 12)
    assert all(i.endswith("+bd") for i in m["data"]["poisoned_ids"])
    assert m["training"]["steps"] == 2 * 3  # 12 records / batch 4 = 3 steps per epoch, 2 epochs


def test_the_broad_buffer_set_has_framings_and_the_terse_style_but_not_the_shifted_prompts() -> None:
    from bnr.toy.attacks import attack_split
    from bnr.toy.world import harm_lexicon, split

    words = harm_lexicon()
    broad, shift = attack_split("provider_broad"), attack_split("harmful_shift")
    assert len(broad) == 6 * len(split("provider_harmful")) and len({r.id for r in broad}) == len(broad)
    assert {_skeleton(r.output, words) for r in shift} <= {_skeleton(r.output, words) for r in broad}  # the style
    assert not {_skeleton(r.instruction, words) for r in shift} & {_skeleton(r.instruction, words) for r in broad}
    provider_words = {w for r in split("provider_harmful") for w in r.instruction.split() if w in words}
    assert all(w in provider_words for r in broad for w in r.instruction.split() if w in words)  # provider harm only
