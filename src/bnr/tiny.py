"""Tiny models built locally from scratch (no download): a word-level tokenizer and a small random Llama.

Used by the tests, the `tiny` preset and the toy world, so every code path runs on the real Hugging Face
loading machinery offline.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# whitespace and punctuation are their own tokens so decoding round-trips text exactly
TOKEN_PATTERN = r"\s|\w+|[^\w\s]"


def word_tokenizer(texts: Iterable[str], *, max_vocab: int = 4000, min_count: int = 1) -> Any:
    """A word-level fast tokenizer over `texts` (every space, word and punctuation mark is one token)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(re.findall(TOKEN_PATTERN, t))
    words = [w for w, c in counts.most_common(max_vocab) if c >= min_count]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(words) - set(SPECIALS)))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(
    vocab_size: int,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 64,
    max_positions: int = 512,
    seed: int = 0,
    tie_embeddings: bool = True,
) -> Any:
    """A randomly initialised LlamaForCausalLM of the given (small) shape."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tie_embeddings,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save as an ordinary Hugging Face model folder (safetensors + tokenizer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def build_tiny_model_dir(out_dir: str | Path, texts: Iterable[str], **shape: Any) -> Path:
    """Tokenizer from `texts` + random tiny Llama, saved to `out_dir`."""
    tok = word_tokenizer(texts)
    return save_model(tiny_llama(len(tok), **shape), tok, out_dir)
