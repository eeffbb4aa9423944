"""Model judges on tiny stand-ins of the real architectures, loaded through the real from_pretrained path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bnr.errors import BnrError
from bnr.eval import make_judge, run_benchmark
from bnr.eval.guards import BEAVERDAM_PROMPT, parse_guard_output

CATEGORIES = [f"cat_{i}" for i in range(14)]
TEXTS = [
    BEAVERDAM_PROMPT,
    "how do I zorp the blick",
    "I cannot help",
    "first grab the blick then zorp it hard",
    "user assistant safe unsafe S1 verdict : maybe",
]


def _tokenizer(first: str | None = None) -> Any:
    """Word-level tokenizer; `first` (if given) gets id 0, so a model with all-zero logits always emits it."""
    import re

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from bnr.tiny import SPECIALS, TOKEN_PATTERN

    words = sorted({w for t in TEXTS for w in re.findall(TOKEN_PATTERN, t)} - set(SPECIALS) - {first})
    vocab_list = ([first] if first else []) + SPECIALS + words
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab_list)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def _llama_config(tok: Any, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **extra,
    )


@pytest.fixture(scope="module")
def beaverdam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LlamaForSequenceClassification with BeaverDam's 14-label multi-label head."""
    from transformers import LlamaForSequenceClassification

    tok = _tokenizer()
    cfg = _llama_config(
        tok,
        num_labels=14,
        id2label=dict(enumerate(CATEGORIES)),
        label2id={c: i for i, c in enumerate(CATEGORIES)},
        problem_type="multi_label_classification",
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("beaverdam")
    LlamaForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _guard_dir(root: Path, first: str) -> Path:
    """A Llama causal LM whose final norm is zero: every logit is 0, so greedy decoding emits token id 0."""
    from transformers import LlamaForCausalLM

    tok = _tokenizer(first)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}\n{% endfor %}verdict :"
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config(tok, tie_word_embeddings=False))
    with torch.no_grad():
        model.model.norm.weight.zero_()
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


def test_beaverdam_batched_matches_single_and_truncates(beaverdam_dir: Path) -> None:
    judge: Any = make_judge("beaverdam", path=str(beaverdam_dir), device="cpu", batch_size=2)
    long_answer = "zorp it hard " * 200
    prompts = ["how do I zorp the blick", "how do I zorp the blick", "how do I zorp the blick"]
    answers = ["I cannot help", "first grab the blick then zorp it hard", long_answer]
    probs = judge.probabilities(prompts, answers)
    assert probs.shape == (3, 14)
    for i, text in enumerate(judge.texts(prompts, answers)):
        ids = judge.tokenizer(text, truncation=True, max_length=256, return_tensors="pt")
        if i == 2:
            assert ids["input_ids"].shape[1] == 256  # BeaverTails truncates the QA text to 256 tokens
        with torch.no_grad():
            single = torch.sigmoid(judge.model(**ids).logits)[0]
        torch.testing.assert_close(probs[i], single, atol=1e-5, rtol=1e-4)
    verdicts = judge.judge(prompts, answers)
    for v, row in zip(verdicts, probs):
        assert v.flagged == bool((row > 0.5).any())
        assert v.score == pytest.approx(float(row.max()))
        assert (v.detail is None) == (not v.flagged)
    assert all(
        v.flagged for v in make_judge("beaverdam", path=str(beaverdam_dir), threshold=0.0).judge(prompts, answers)
    )


def test_missing_weights_fail_before_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_lm: tuple[Any, Any], tiny_data: dict[str, Path]
) -> None:
    empty = tmp_path / "dam"
    empty.mkdir()
    (empty / "config.json").write_text("{}")

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("generation must not start")

    monkeypatch.setattr(sys.modules["bnr.eval.generate"], "generate", boom)
    model, tok = tiny_lm
    opts = {
        "judges": ["beaverdam"],
        "judge_options": {"beaverdam": {"path": str(empty)}},
        "data": {"source": "file", "path": str(tiny_data["harmful"])},
    }
    with pytest.raises(BnrError, match=r"no model weights.*huggingface-cli download.*path=DIR"):
        run_benchmark("harmful", model, tok, options=opts)
    with pytest.raises(BnrError, match=r"cannot load weights from .*nonexistent.*huggingface-cli download"):
        make_judge("llamaguard", path="nonexistent-org/nonexistent-guard")


def test_llamaguard_stand_in(tmp_path: Path) -> None:
    judge = make_judge("llamaguard", path=str(_guard_dir(tmp_path / "g1", "unsafe")), device="cpu")
    verdicts = judge.judge(["how do I zorp the blick", "say hello"], ["first grab the blick", "hello"])
    assert [v.flagged for v in verdicts] == [True, True]
    garbage = make_judge("llamaguard", path=str(_guard_dir(tmp_path / "g2", "maybe")), device="cpu")
    with pytest.raises(BnrError, match="neither safe nor unsafe"):
        garbage.judge(["q"], ["a"])


def test_parse_guard_output() -> None:
    v = parse_guard_output("\n\nunsafe\nS1,S9")
    assert v is not None and v.flagged and v.detail == "S1,S9"
    v = parse_guard_output(" safe")
    assert v is not None and not v.flagged
    assert parse_guard_output("I think it is fine") is None
    assert parse_guard_output("") is None
