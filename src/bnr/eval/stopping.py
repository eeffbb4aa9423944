"""Stop strings for `bnr.eval.generate`: transformers' `StopStringCriteria` (what `generate(stop_strings=...)`
builds), on the new tokens only, for every tokenizer. Its own module because it subclasses transformers' classes,
which import torch; `bnr.eval.generate` imports it where it generates, so importing `bnr.eval` stays light."""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria, StopStringCriteria


def token_strings(
    tokenizer: Any, stop_string_matching_mode: str | None = None
) -> tuple[tuple[Any, ...], tuple[int, ...]]:
    """Each vocabulary token as the text it decodes to on its own, and its id: the table transformers'
    `StopStringCriteria` matches stop strings against, for a vocabulary its own reader cannot take.

    That reader decodes every token behind the word "abcdef" and cuts at it (so a prefix space or a "##" marker
    comes out right); a word-level vocabulary without that word (the toy world's, `bnr.tiny.word_tokenizer`)
    encodes it as <unk>, the cut finds nothing and it raises ValueError. A word-level token decodes to itself with
    no prefix to strip, so decoding it alone is exact. Byte-level modes match on bytes, so the text is encoded."""
    vocab = tokenizer.get_vocab()
    texts = [tokenizer.convert_tokens_to_string([token]) for token in vocab]
    return tuple(t.encode() if stop_string_matching_mode else t for t in texts), tuple(vocab.values())


def stop_criteria(tokenizer: Any, stop: list[str]) -> StopStringCriteria:
    """transformers' `StopStringCriteria` for `stop` (what `generate(stop_strings=..., tokenizer=...)` builds)
    wherever it reads the vocabulary (SmolLM2's and other BPE / SentencePiece tokenizers), else the same
    criterion over `token_strings`: one matching rule for every tokenizer."""
    try:
        return StopStringCriteria(tokenizer, stop)
    except ValueError:  # its reader of the vocabulary failed (see token_strings)
        return VocabStopStrings(tokenizer, stop)


class VocabStopStrings(StopStringCriteria):
    """transformers' `StopStringCriteria` (its matching, unchanged) over the token table of `token_strings`."""

    @staticmethod
    def clean_tokenizer_vocab(
        tokenizer: Any, static_prefix: str = "", stop_string_matching_mode: str | None = None
    ) -> tuple[tuple[Any, ...], tuple[int, ...]]:
        return token_strings(tokenizer, stop_string_matching_mode)


class StopInNewText(StoppingCriteria):
    """`criteria` on the new tokens only (after `prompt_width`): a stop string ends a row once the completion
    holds it, never because it began in the prompt (`generate(stop_strings=...)` looks at the whole row). So a
    completion is the free one cut at its first stop string (`trim_at_stop`), as vLLM and the OpenAI API do."""

    def __init__(self, criteria: StopStringCriteria, prompt_width: int) -> None:
        self.criteria = criteria
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return self.criteria(input_ids[:, self.prompt_width :], scores)  # type: ignore[arg-type,return-value]
