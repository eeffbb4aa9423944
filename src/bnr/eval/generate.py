"""The one batched generation loop that every benchmark uses.

Prompts are tokenized once, sorted by length (longest first, so an out-of-memory batch shows up at once and
padding stays small), generated in left-padded batches with the model's KV cache, greedy by default, cut at
stop strings and returned in input order.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bnr.errors import BnrError
from bnr.progress import Progress

if TYPE_CHECKING:  # torch is imported where it runs, so importing bnr.eval (and a plug-in's config) stays light
    import torch

log = logging.getLogger(__name__)


class FiniteLogitsCheck:
    """A logits processor that records whether any step's logits of the batch held NaN or +Inf (-Inf is a mask
    that other processors set). One fused comparison per step on the device, no sync: read `ok` after generating."""

    def __init__(self) -> None:
        self.ok: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        finite = (scores < float("inf")).all()  # False for NaN and +Inf
        self.ok = finite if self.ok is None else self.ok & finite
        return scores

    def passed(self) -> bool:
        return self.ok is None or bool(self.ok)


def trim_at_stop(text: str, stop: list[str] | None) -> str:
    """Cut `text` at the earliest occurrence of any stop string."""
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The model's context in tokens (its config's `max_position_embeddings`, else the tokenizer's
    `model_max_length` when it is a real number); None when neither says."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 10**7 else None


def prompt_budget(model: Any, tokenizer: Any, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit beside `max_new_tokens` new ones in the model's context (None: no limit known)."""
    n = context_length(model, tokenizer)
    return None if n is None else max(1, n - max_new_tokens)


def fit_prompt(ids: list[int], budget: int | None, bos_id: int | None) -> tuple[list[int], int]:
    """(ids cut to `budget` tokens, tokens dropped). The rule: keep the end of the prompt (the question's end and
    the template's answer header), drop from the left, and keep a leading BOS token in place."""
    if budget is None or len(ids) <= budget:
        return ids, 0
    head = ids[:1] if bos_id is not None and ids and ids[0] == bos_id and budget > 1 else []
    kept = head + ids[len(ids) - (budget - len(head)) :]
    return kept, len(ids) - len(kept)


def truncated_counts(
    model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, add_special_tokens: bool = True
) -> list[int]:
    """Tokens `generate` drops from each prompt to fit the model's context (0 for a prompt that fits)."""
    budget = prompt_budget(model, tokenizer, max_new_tokens)
    if budget is None:
        return [0] * len(prompts)
    ids = tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
    return [max(0, len(row) - budget) for row in ids]


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def left_padded(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` of token rows padded on the left to the longest (what the tokenizer's
    `padding=True` with `padding_side="left"` gives for the same rows)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _generate_batch(
    model: Any,
    tokenizer: Any,
    rows: list[list[int]],
    *,
    max_new_tokens: int,
    stop: list[str] | None,
    stopping: Any,
    do_sample: bool,
    gen_kwargs: dict[str, Any],
) -> list[str]:
    enc = left_padded(rows, tokenizer.pad_token_id, _model_device(model))
    width = enc["input_ids"].shape[1]
    from bnr.eval.stopping import StopInNewText

    criteria = [StopInNewText(stopping, width)] if stopping else None
    sampling = {} if do_sample else {"temperature": None, "top_p": None, "top_k": None}
    check = FiniteLogitsCheck()
    gen_kwargs = {**gen_kwargs, "logits_processor": [*gen_kwargs.get("logits_processor", []), check]}
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=criteria,
        **sampling,
        **gen_kwargs,
    )
    if not check.passed():
        raise BnrError(
            "the model's logits became NaN/Inf while generating (broken weights, or an overflow in this dtype); "
            "its completions are not scored - check the adapter and the base, or use model.dtype=float32"
        )
    texts: list[str] = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [trim_at_stop(t, stop) for t in texts]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    stop: list[str] | None = None,
    do_sample: bool = False,
    add_special_tokens: bool = True,
    progress: bool = True,
    **gen_kwargs: Any,
) -> list[str]:
    """Completions (new text only, stop strings trimmed) for `prompts`, in input order.

    Greedy unless `do_sample`; extra keyword arguments (temperature, top_p, ...) go to `model.generate`.
    A prompt longer than the model's context minus `max_new_tokens` is cut from the left (`fit_prompt`).
    The tokenizer's padding side is set to left for the call and restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    if not prompts:
        return []
    budget, bos = prompt_budget(model, tokenizer, max_new_tokens), getattr(tokenizer, "bos_token_id", None)
    if hasattr(model, "complete"):  # a serving engine (eval.backend=vllm) batches and schedules by itself
        ids = [
            fit_prompt(row, budget, bos)[0]
            for row in tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
        ]
        texts = model.complete(ids, max_new_tokens=max_new_tokens, stop=stop, do_sample=do_sample, **gen_kwargs)
        return [trim_at_stop(t, stop) for t in texts]
    import torch

    from bnr.eval import stopping as stops

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]  # once: batches pad these rows
    ids = [fit_prompt(row, budget, bos)[0] for row in ids]  # an over-long prompt keeps its end (truncated_counts)
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    stopping = stops.stop_criteria(tokenizer, stop) if stop else None
    results: list[str] = [""] * len(prompts)
    saved_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), Progress(len(prompts), "generate", unit="prompt", enabled=progress) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                texts = _generate_batch(
                    model,
                    tokenizer,
                    [ids[i] for i in idx],
                    max_new_tokens=max_new_tokens,
                    stop=stop,
                    stopping=stopping,
                    do_sample=do_sample,
                    gen_kwargs=gen_kwargs,
                )
                for i, t in zip(idx, texts):
                    results[i] = t
                bar.update(len(idx))
    finally:
        tokenizer.padding_side = saved_side
        model.train(was_training)
    return results
