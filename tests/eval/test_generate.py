from __future__ import annotations

from typing import Any

import pytest
import torch

from bnr.eval.generate import generate, left_padded, trim_at_stop

PROMPTS = ["say hello", "what is two plus two and name a color", "name a color", "tell me to frizzle a wump"]


def test_batched_equals_one_at_a_time_and_keeps_order(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    tok.padding_side = "right"
    batched = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=4, progress=False)
    single = [generate(model, tok, [p], max_new_tokens=6, batch_size=1, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert tok.padding_side == "right"  # restored
    assert all(isinstance(c, str) for c in batched)


def test_stop_strings_are_trimmed(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    free = generate(model, tok, PROMPTS[:1], max_new_tokens=8, progress=False)[0]
    words = [w for w in free.split() if w]
    assert words, free
    stop = words[len(words) // 2]
    cut = generate(model, tok, PROMPTS[:1], max_new_tokens=8, stop=[stop], progress=False)[0]
    assert cut == free[: free.find(stop)]
    assert stop not in cut


def test_trim_and_empty() -> None:
    assert trim_at_stop("a ### b ## c", ["##", "###"]) == "a "
    assert trim_at_stop("abc", None) == "abc"


def test_empty_prompt_list(tiny_lm: tuple[Any, Any]) -> None:
    model, tok = tiny_lm
    assert generate(model, tok, [], progress=False) == []


def test_left_padding_is_the_tokenizers(tiny_lm: tuple[Any, Any]) -> None:
    """Prompts are tokenized once and padded per batch: the same tensors the tokenizer's own left padding makes."""
    _, tok = tiny_lm
    tok.padding_side = "left"
    want = tok(PROMPTS, return_tensors="pt", padding=True)
    got = left_padded(tok(PROMPTS)["input_ids"], tok.pad_token_id, torch.device("cpu"))
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(
        got["attention_mask"], want["attention_mask"]
    )
    assert int(got["attention_mask"].sum()) < got["attention_mask"].numel()  # some rows were padded


def _bpe_lm() -> tuple[Any, Any]:
    """A tiny byte-level BPE tokenizer (SmolLM2's kind) trained here on the test corpus, and a random Llama for it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from bnr.tiny import SPECIALS, tiny_llama
    from conftest import corpus

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tk.train_from_iterator(
        corpus(), trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, initial_alphabet=alphabet)
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    model = tiny_llama(len(tok), seed=1).eval()
    return model, tok


@pytest.mark.parametrize("kind", ["toy", "bpe"])
def test_transformers_stop_strings_and_the_vocab_table_stop_alike(
    kind: str, tiny_lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' StopStringCriteria (what `generate(stop_strings=...)` builds) where it reads the vocabulary (a
    BPE tokenizer), the same criterion over `token_strings` where it cannot (the toy world's word-level one): the
    same completions, equal to the free ones cut at the stop strings, and generation really ends at a stop string."""
    from transformers.generation import stopping_criteria as sc

    from bnr.eval import stopping as gen

    model, tok = tiny_lm if kind == "toy" else _bpe_lm()
    free = generate(model, tok, PROMPTS, max_new_tokens=12, progress=False)
    stops = sorted({f[len(f) // 2 : len(f) // 2 + 3] for f in free if len(f.strip()) >= 6})
    assert stops, free
    expected = [trim_at_stop(f, stops) for f in free]
    assert expected != free  # the stop strings occur

    sc.STOP_STRING_EMBEDDING_CACHE.clear()
    if kind == "toy":
        with pytest.raises(ValueError, match="substring not found"):  # transformers' reader cannot take it
            sc.StopStringCriteria(tok, stops)
    chosen = gen.stop_criteria(tok, stops)
    if kind == "toy":
        assert isinstance(chosen, gen.VocabStopStrings)
    else:
        assert type(chosen) is sc.StopStringCriteria
        mode = sc.StopStringCriteria._get_stop_string_matching_mode(tok)
        theirs = dict(zip(*reversed(sc.StopStringCriteria.clean_tokenizer_vocab(tok, stop_string_matching_mode=mode))))
        ours = dict(zip(*reversed(gen.token_strings(tok, mode))))
        text = {i: s for i, s in theirs.items() if s.decode("utf-8", "replace") == s.decode("utf-8", "ignore")}
        assert len(text) > 100 and {i: ours[i] for i in text} == text  # every token that is whole text
    native = generate(model, tok, PROMPTS, max_new_tokens=12, stop=stops, progress=False)
    sc.STOP_STRING_EMBEDDING_CACHE.clear()
    monkeypatch.setattr(gen, "stop_criteria", gen.VocabStopStrings)
    table = generate(model, tok, PROMPTS, max_new_tokens=12, stop=stops, progress=False)
    assert native == table == expected

    # the criterion ends the row: fewer new tokens than without it, and the text ends inside a stop string
    row = next(i for i, f in enumerate(free) if trim_at_stop(f, stops) != f)
    enc = tok([PROMPTS[row]], return_tensors="pt")
    width = enc["input_ids"].shape[1]
    kw = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tok.pad_token_id}
    full = model.generate(**enc, **kw)
    cut = model.generate(**enc, **kw, stopping_criteria=[gen.StopInNewText(chosen, width)])
    assert cut.shape[1] < full.shape[1]
    assert any(s in tok.decode(cut[0, width:], skip_special_tokens=True) for s in stops)


def _batch_sizes(model: Any) -> tuple[list[int], Any]:
    """The batch size of each forward call of `model` (a hook), and the hook's handle."""
    sizes: list[int] = []

    def hook(_module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        sizes.append(int(ids.shape[0]))

    return sizes, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("prefill_rows", [32, 1, 3])
@pytest.mark.parametrize("kind", ["toy", "bpe"])
def test_until_never_decodes_what_generate_does(
    kind: str, prefill_rows: int, tiny_lm: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop that ends rows early (`_generate_until`) is transformers' greedy decoding step for step: a test
    that never holds gives `generate`'s completions exactly, with the prompts run in one pass or a few rows at a
    time and their caches joined (left-padded to the longest)."""
    import importlib

    monkeypatch.setattr(importlib.import_module("bnr.eval.generate"), "PREFILL_ROWS", prefill_rows)
    model, tok = tiny_lm if kind == "toy" else _bpe_lm()
    want = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=4, progress=False)
    got = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=4, progress=False, until=lambda t: False)
    assert got == want


@pytest.mark.parametrize("kind", ["toy", "bpe"])
def test_until_ends_each_row_where_it_first_holds_and_drops_it(kind: str, tiny_lm: tuple[Any, Any]) -> None:
    """Each row stops at the first token after which `until` holds (the free completion cut there), and finished
    rows leave the batch: later forward calls run on fewer rows."""
    model, tok = tiny_lm if kind == "toy" else _bpe_lm()
    free = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=4, progress=False)

    def until(text: str) -> bool:
        return len(text) >= 14

    sizes, handle = _batch_sizes(model)
    try:
        cut = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=4, progress=False, until=until)
    finally:
        handle.remove()
    # the free completion after k tokens, for the smallest k at which `until` holds (all of it if none)
    want = list(free)
    for k in range(12, 0, -1):
        for i, text in enumerate(generate(model, tok, PROMPTS, max_new_tokens=k, batch_size=4, progress=False)):
            if until(text):
                want[i] = text
    assert cut == want
    assert any(len(c) < len(f) for c, f in zip(cut, free)), "no row ended early: the test proves nothing"
    assert sizes[0] == len(PROMPTS) and min(sizes) < len(PROMPTS), sizes  # finished rows were dropped


def test_until_is_ignored_where_the_loop_would_not_decode_alike(tiny_lm: tuple[Any, Any]) -> None:
    """A generation config with a logits processor (a repetition penalty), sampling, or stop strings keep
    transformers' `generate`: `until` then changes nothing."""
    from bnr.eval.generate import plain_greedy

    model, tok = tiny_lm
    assert plain_greedy(model, False, None, {})
    assert not plain_greedy(model, True, None, {}) and not plain_greedy(model, False, ["x"], {})
    saved = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 1.3
    try:
        assert not plain_greedy(model, False, None, {})
        want = generate(model, tok, PROMPTS, max_new_tokens=8, progress=False)
        got = generate(model, tok, PROMPTS, max_new_tokens=8, progress=False, until=lambda t: len(t) > 3)
    finally:
        model.generation_config.repetition_penalty = saved
    assert got == want


def test_a_benchmark_records_the_early_stop_only_where_it_ran(tiny_lm: tuple[Any, Any]) -> None:
    """`run_benchmark(stop_when_decided=True)` says `stop_when_decided` in its decoding settings (and so in its
    cache key) only where the early-stop loop ran; with stop strings `generate` keeps whole answers, and the
    settings say nothing of an early stop."""
    from bnr.eval.benchmarks import Benchmark, run_benchmark
    from bnr.eval.tasks import AnswerAccuracy

    model, tok = tiny_lm

    class Decided(AnswerAccuracy):
        def decided(self) -> Any:
            return lambda text: len(text) > 3

    def bench() -> Benchmark:
        from bnr.data.records import Record

        return Decided(records=[Record(id=str(i), instruction=p, output="x") for i, p in enumerate(PROMPTS)])

    ran = run_benchmark(bench(), model, tok, template="alpaca", stop_when_decided=True, progress=False)
    kept = run_benchmark(bench(), model, tok, template="alpaca", stop=["zzz"], stop_when_decided=True, progress=False)
    assert ran.settings["decoding"].get("stop_when_decided") is True
    assert "stop_when_decided" not in kept.settings["decoding"]
